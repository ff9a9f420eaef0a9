"""Submitting and waiting against a FAKE MLClient; validating finished sweeps and final trainings."""

from __future__ import annotations

import json
import logging

import pytest

from support.fake_ml_client import FakeMLClient, finish
from resume_ner.azureml import (
    create_final_training_job,
    create_hpo_sweep_job_for_backbone,
    submit_and_wait_for_job,
    validate_final_training_job,
    validate_sweep_job,
)
from resume_ner.config import ResumeNerConfig
from resume_ner.errors import ConfigError, ResumeNerError

BACKBONE = "bert-base-cased"
TARGET = {"environment": "azureml:resume-ner:1", "compute_cluster": "gpu-cluster", "aml_experiment_name": "exp",
          "data_asset": "azureml:resumes:1"}


class FakeClock:
    """``clock`` and ``sleep`` of the wait loop: time passes only when it sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def final_job():
    return create_final_training_job(ResumeNerConfig(), **TARGET)


@pytest.fixture
def sweep_job():
    config = ResumeNerConfig.model_validate({"hpo": {"sampler": "random"}})
    return create_hpo_sweep_job_for_backbone(BACKBONE, hpo_config=config, **TARGET)


def _wait(client, job, clock, **options):
    return submit_and_wait_for_job(client, job, sleep=clock.sleep, clock=clock.clock, **options)


def test_a_job_is_polled_until_completed_and_returned(final_job, caplog):
    client, clock = FakeMLClient(["Queued", "Running", "Running", "Completed"]), FakeClock()
    with caplog.at_level(logging.INFO, logger="resume_ner.azureml.submit"):
        done = _wait(client, final_job, clock, poll_interval=30)
    assert done.status == "Completed" and done.name == "fake-job-1"
    assert client.jobs.submitted == [final_job] and client.jobs.gets == 4
    assert clock.sleeps == [30, 30, 30]
    logged = [record.getMessage() for record in caplog.records]
    assert logged == ["submitted AzureML job fake-job-1", "AzureML job fake-job-1: Queued",
                      "AzureML job fake-job-1: Running", "AzureML job fake-job-1: Completed"]


def test_a_failed_job_raises_the_error_azureml_recorded_without_printing_its_log(final_job, capsys):
    client = FakeMLClient(["Running", "Failed"], error="CUDA out of memory in rank 0")
    with pytest.raises(ResumeNerError, match=r"fake-job-1 Failed: .*CUDA out of memory in rank 0"):
        _wait(client, final_job, FakeClock())
    assert "log line" not in capsys.readouterr().out


def test_a_canceled_job_raises(final_job):
    with pytest.raises(ResumeNerError, match="fake-job-1 Canceled: canceled"):
        _wait(FakeMLClient(["Running", "Canceled"]), final_job, FakeClock())


@pytest.mark.parametrize("on_timeout, cancelled, message", [
    ("cancel", ["fake-job-1"], "cancellation requested"),
    ("leave", [], "left running"),
])
def test_past_the_timeout_the_job_is_cancelled_or_left_running(final_job, on_timeout, cancelled, message):
    client, clock = FakeMLClient(["Running"]), FakeClock()
    with pytest.raises(ResumeNerError, match=f"did not finish within 100s \\(last status Running\\): {message}"):
        _wait(client, final_job, clock, timeout=100, poll_interval=30, on_timeout=on_timeout)
    assert client.jobs.cancelled == cancelled
    assert clock.now == 100 and clock.sleeps == [30, 30, 30, 10]  # the last sleep ends at the deadline


def test_not_responding_is_waited_through_and_failed_status_reads_are_retried(final_job):
    client = FakeMLClient(["Running", "NotResponding", "Running", "Completed"], get_failures=2)
    assert _wait(client, final_job, FakeClock()).status == "Completed"


def test_status_reads_failing_in_a_row_stop_the_wait(final_job):
    with pytest.raises(ResumeNerError, match="5 status reads failed in a row .*connection reset"):
        _wait(FakeMLClient(["Running"], get_failures=9), final_job, FakeClock())


def test_an_unknown_timeout_action_is_refused_before_submitting(final_job):
    client = FakeMLClient(["Completed"])
    with pytest.raises(ConfigError, match="on_timeout='wait'"):
        _wait(client, final_job, FakeClock(), on_timeout="wait")
    assert client.jobs.submitted == []


# --- validate -------------------------------------------------------------------------------------------------


def test_a_finished_sweep_is_valid_and_summarised(sweep_job):
    client = FakeMLClient(["Completed"], children=("Completed", "Canceled", "Completed"),
                          properties={"best_child_run_id": "fake-job-1_2", "score": "0.71"})
    done = _wait(client, sweep_job, FakeClock())
    assert validate_sweep_job(done, BACKBONE, client) == {
        "best_trial": "fake-job-1_2", "score": 0.71, "primary_metric": "val_f1_micro",
        "trials": {"Completed": 2, "Canceled": 1}}


def test_an_incomplete_sweep_names_every_missing_piece(sweep_job):
    job = finish(sweep_job, name="sweep-1", status="Failed")
    del job.outputs["model"]
    client = FakeMLClient(["Failed"], children=("Failed", "Canceled"))
    with pytest.raises(ResumeNerError) as error:
        validate_sweep_job(job, "roberta-base", client)
    message = str(error.value)
    assert "AzureML sweep sweep-1 of roberta-base is incomplete: 6 problem(s)" in message
    for missing in ("status is Failed, not Completed", "no 'model' output",
                    "tag resume_ner.backbone is 'bert-base-cased', not 'roberta-base'",
                    "no best trial (property best_child_run_id)",
                    "no value of the primary metric 'val_f1_micro' (property score)",
                    "0 completed trial(s), expected at least 1 (1 Canceled, 1 Failed)"):
        assert missing in message


def _results(best_metric=0.64, test=True):
    files = {"train_result.json": json.dumps({"metric": "f1_micro", "best_metric": best_metric, "run_id": "r1"})}
    if test:
        files["test_metrics.json"] = json.dumps({"f1_micro": 0.6, "documents": 12})
    return {"metrics": files}


def test_a_finished_final_training_is_valid_and_summarised(final_job):
    client = FakeMLClient(["Completed"], files=_results())
    done = _wait(client, final_job, FakeClock())
    assert validate_final_training_job(done, client) == {"metric": "f1_micro", "best_metric": 0.64,
                                                         "test_f1_micro": 0.6}
    assert validate_final_training_job(done) == {"metric": None, "best_metric": None, "test_f1_micro": None}


def test_a_final_training_without_results_names_what_is_missing(final_job):
    done = finish(final_job, name="final-1", status="Completed")
    client = FakeMLClient(["Completed"], files=_results(best_metric=None, test=False))
    with pytest.raises(ResumeNerError) as error:
        validate_final_training_job(done, client)
    assert "no readable test_metrics.json (FileNotFoundError): the data has no test split" in str(error.value)
    assert "train_result.json has no best validation f1_micro" in str(error.value)
    del done.outputs["metrics"]
    with pytest.raises(ResumeNerError, match="(?s)final-1 is incomplete: 1 problem.*no 'metrics' output"):
        validate_final_training_job(done, client)
