"""``study_report_html``: one self-contained, escaped HTML page of a study for the KFP UI's HTML viewer."""

from __future__ import annotations

import datetime
from html.parser import HTMLParser

import optuna
import pytest

from resume_ner.hpo.report import study_report_html
from resume_ner.hpo.study import DIRECTION_ATTR, METRIC_ATTR

VOID = {"meta", "img", "br", "hr", "link", "input"}
DISTRIBUTIONS = {
    "training.learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True),
    "model.pooling": optuna.distributions.CategoricalDistribution(["mean", "<b>first</b>"]),
}


class _TagChecker(HTMLParser):
    """Collects ``img`` sources and fails on a closing tag that does not close the open element."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> does not close the open element"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.open == [], f"unclosed elements: {checker.open}"
    return checker


def _study(trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(study_name="ner <s>", direction="maximize", storage=optuna.storages.InMemoryStorage())
    study.set_user_attr(METRIC_ATTR, "f1_micro")
    study.set_user_attr(DIRECTION_ATTR, "maximize")
    for trial in trials:
        study.add_trial(trial)
    return study


def _trial(state: optuna.trial.TrialState, value: float | None = None, *, lr: float = 1e-4,
           pooling: str = "mean", attrs: dict | None = None, intermediate: dict | None = None):
    """A finished trial that ran 42 s."""
    trial = optuna.trial.create_trial(
        state=state,
        value=value,
        params={"training.learning_rate": lr, "model.pooling": pooling},
        distributions=DISTRIBUTIONS,
        user_attrs=attrs or {},
        intermediate_values=intermediate or {},
    )
    trial.datetime_start = datetime.datetime(2024, 1, 1, 12, 0, 0)
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=42)
    return trial


@pytest.fixture
def study() -> optuna.Study:
    """Trials 0-2 COMPLETE (0.3, 0.8, 0.5; trial 1's pooling is ``<b>first</b>``), 3 PRUNED, 4 FAIL."""
    complete = optuna.trial.TrialState.COMPLETE
    return _study([
        _trial(complete, 0.3, lr=1e-5, intermediate={1: 0.2, 2: 0.3}),
        _trial(complete, 0.8, lr=5e-4, pooling="<b>first</b>", intermediate={1: 0.5, 2: 0.8}),
        _trial(complete, 0.5, lr=1e-3, intermediate={1: 0.4, 2: 0.5}),
        _trial(optuna.trial.TrialState.PRUNED, attrs={"pruned_epoch": 1, "last_value": 0.1}, intermediate={1: 0.1}),
        _trial(optuna.trial.TrialState.FAIL, attrs={"error": "ValueError: x < 0 & y > 1"}),
    ])


def test_html_report_has_every_trial_the_best_one_and_embedded_plots(study):
    page = study_report_html(study)
    parsed = _parse(page)
    text = "".join(parsed.text)
    assert "<title>HPO study ner &lt;s&gt;</title>" in page
    assert "f1_micro" in text and "maximize" in text
    assert "Best trial: 1" in text and "0.8" in text
    cells = [cell for cell in (t.strip() for t in parsed.text) if cell]
    assert {"0", "*1", "2", "3", "4"} <= set(cells)
    assert "PRUNED@1" in cells and "FAIL" in cells and "ValueError: x < 0 & y > 1" in cells
    assert "42.0s" in cells
    # a param value and an error are escaped: no markup from the study reaches the page
    assert "<b>first</b>" not in page and "&lt;b&gt;first&lt;/b&gt;" in page
    assert "x &lt; 0 &amp; y &gt; 1" in page
    assert parsed.images and all(src.startswith("data:image/png;base64,") for src in parsed.images)
    assert len(parsed.images) == 3  # optimization history, param importances, intermediate values
    assert "http://" not in page and "https://" not in page


def test_html_report_of_a_study_without_complete_trials(study):
    failed = _study([_trial(optuna.trial.TrialState.FAIL, attrs={"error": "RuntimeError: out of memory"})])
    page = study_report_html(failed)
    parsed = _parse(page)
    text = "".join(parsed.text)
    assert "No COMPLETE trial" in text and "Best trial" not in text
    assert "RuntimeError: out of memory" in text
    assert parsed.images == []
    empty = _parse(study_report_html(_study([])))
    assert "No COMPLETE trial" in "".join(empty.text) and "Trials (0)" in "".join(empty.text)


def test_html_report_closes_its_figures(study):
    import matplotlib.pyplot as plt

    study_report_html(study)
    assert plt.get_fignums() == []
