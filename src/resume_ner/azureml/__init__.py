"""AzureML (SDK v2) jobs of the training workflow, from the project image and its training entrypoint.

``jobs`` (the final training command job), ``sweep`` (the HPO sweep of one backbone, and its dry run),
``pipeline`` (load data -> sweep -> select best -> final training -> register with lineage), ``select`` (the
select-best step), ``submit`` (submit, wait, validate; deploy an online endpoint), ``endpoint`` (a managed online
endpoint and deployment of a registered version) and ``score`` (its scoring script). ``azure.ai.ml`` is imported
only when a job or endpoint is built or submitted.
"""

from resume_ner.azureml.jobs import create_final_training_job
from resume_ner.azureml.pipeline import create_training_pipeline_job
from resume_ner.azureml.submit import submit_and_wait_for_job, validate_final_training_job, validate_sweep_job
from resume_ner.azureml.sweep import create_dry_run_sweep_job_for_backbone, create_hpo_sweep_job_for_backbone
from resume_ner.workflows.final import build_final_training_config

__all__ = [
    "build_final_training_config",
    "create_dry_run_sweep_job_for_backbone",
    "create_final_training_job",
    "create_hpo_sweep_job_for_backbone",
    "create_training_pipeline_job",
    "submit_and_wait_for_job",
    "validate_final_training_job",
    "validate_sweep_job",
]
