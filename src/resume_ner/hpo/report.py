"""Study reports: a readable trials table, and ``trials.csv`` plus PNG plots written atomically.

Plots (``optuna.visualization.matplotlib``, Agg backend): ``optimization_history.png`` when a trial
completed, ``param_importances.png`` when at least two did, ``intermediate_values.png`` when some trial
reported per-epoch values.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from resume_ner.io import write_bytes_atomic, write_text_atomic

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
ATTR_COLUMNS = ("mlflow_run_id", "checkpoint", "pruned_epoch", "last_value", "error")
NOTE_CHARS = 80


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _seconds(trial: Any) -> float | None:
    return trial.duration.total_seconds() if trial.duration is not None else None


def _best_number(study: Any) -> int | None:
    from resume_ner.hpo.select import best_frozen_trial

    best = best_frozen_trial(study)
    return best.number if best is not None else None


def trials_table(study: Any) -> str:
    """One line per trial: number (``*`` marks the best), state, value, duration, params, and a note.

    A pruned trial shows its last reported value in parentheses and the epoch it was stopped after; a failed
    one its error.
    """
    best = _best_number(study)
    rows = [("#", "state", "value", "duration", "params", "note")]
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name
        value = _format(trial.value)
        note = ""
        if state == "PRUNED":
            state = f"PRUNED@{trial.user_attrs.get('pruned_epoch', '?')}"
            value = f"({_format(trial.user_attrs.get('last_value'))})"
        elif state == "FAIL":
            note = str(trial.user_attrs.get("error", ""))[:NOTE_CHARS]
        seconds = _seconds(trial)
        rows.append((
            f"{'*' if trial.number == best else ' '}{trial.number}",
            state,
            value,
            f"{seconds:.1f}s" if seconds is not None else "",
            ", ".join(f"{k}={_format(v)}" for k, v in trial.params.items()),
            note,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def trials_csv(study: Any) -> str:
    """Every trial as CSV: number, state, value, duration, times, one column per param and user attribute."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for trial in trials for name in trial.params})
    header = ["number", "state", "value", "duration_s", "datetime_start", "datetime_complete",
              *(f"params.{name}" for name in param_names), *ATTR_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for trial in trials:
        writer.writerow([
            trial.number, trial.state.name, trial.value, _seconds(trial),
            trial.datetime_start.isoformat() if trial.datetime_start else None,
            trial.datetime_complete.isoformat() if trial.datetime_complete else None,
            *(trial.params.get(name) for name in param_names),
            *(trial.user_attrs.get(name) for name in ATTR_COLUMNS),
        ])
    return buffer.getvalue()


def write_study_report(study: Any, out_dir: Path) -> list[Path]:
    """Write ``trials.csv`` and the PNG plots of ``study`` into ``out_dir``; return the files written."""
    out_dir = Path(out_dir)
    written = [write_text_atomic(out_dir / TRIALS_CSV, trials_csv(study))]
    plots = _plots(study)
    import matplotlib.pyplot as plt  # after _plots chose the Agg backend

    for name, axes in plots:
        buffer = io.BytesIO()
        axes.figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(write_bytes_atomic(out_dir / f"{name}.png", buffer.getvalue()))
    log.info("hpo study %r: report in %s (%d file(s))", study.study_name, out_dir, len(written))
    return written


def _plots(study: Any) -> list[tuple[str, Any]]:
    """(name, matplotlib Axes) of each plot that the study's trials allow."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    target = study.user_attrs.get("metric", "objective value")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            out.append(("optimization_history", plots.plot_optimization_history(study, target_name=target)))
        if len(complete) >= 2:
            try:
                out.append(("param_importances", plots.plot_param_importances(study, target_name=target)))
            except (RuntimeError, ValueError) as exc:  # e.g. no parameter varied across the complete trials
                log.warning("hpo study %r: no parameter importance plot: %s", study.study_name, exc)
        if any(t.intermediate_values for t in trials):
            out.append(("intermediate_values", plots.plot_intermediate_values(study)))
    return out

