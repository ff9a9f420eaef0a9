"""The code file of the pyfunc model (MLflow "models from code"): MLflow copies this file into the saved model and
runs it to build the model, so nothing is unpickled when a model is loaded."""

from mlflow.models import set_model

from resume_ner.serving.pyfunc import ResumeNerModel

set_model(ResumeNerModel())
