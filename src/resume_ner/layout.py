"""Names every layer shares: the files and directories a training writes, the environment variables the
project reads, and the training pipeline's name. No imports: any module may use it."""

# A training's output directory (training.trainer writes it; tracking, workflows and the adapters read it)
MODEL_DIRNAME = "model"  # the best checkpoint, a Hugging Face model directory
CHECKPOINTS_DIRNAME = "checkpoints"  # the resumable training states
RESULT_FILE = "train_result.json"  # the TrainResult of a finished training
CONFIG_FILE = "config.yaml"  # the resolved config of the training
TEST_METRICS_FILE = "test_metrics.json"  # the test split's metrics (workflows.training)
LINEAGE_FILE = "lineage.json"  # the lineage of a registered version (workflows.final)

# A final training's MLflow run: the artifact path of the MLflow pyfunc model a registered version points at
MLFLOW_MODEL_DIRNAME = "mlflow_model"

# A model directory
METADATA_FILE = "resume_ner.json"  # label scheme, head, metrics, provenance
WEIGHTS_FILE = "model.safetensors"
CRF_FILE = "crf.safetensors"  # the scores of a CRF head (training.crf), beside the weights
ONNX_FILE = "model.onnx"  # an ONNX export's encoder and classifier, in place of the weights (training.onnx_export)

# Environment variables
IMAGE_ENV = "RESUME_NER_IMAGE"  # the image of the pipeline's components and jobs; wins over pipeline.image
CONFIG_DIR_ENV = "RESUME_NER_CONFIG_DIR"  # the default of --config-dir and of a component's config
PIPELINE_CONFIG_ENV = "RESUME_NER_PIPELINE_CONFIG"  # the compile-time config, as JSON, in every pipeline task
OPTUNA_STORAGE_ENV = "RESUME_NER_OPTUNA_STORAGE"  # the study storage (the Secret of pipeline.optuna_secret)
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"  # MLflow's own; config.load sets tracking.tracking_uri from it

TRAIN_ENTRYPOINT = "resume_ner.cli.train"  # python -m / torchrun -m of containers and remote jobs
PIPELINE_NAME = "resume-ner-training"  # the training pipeline, in KFP, AzureML and MLflow
