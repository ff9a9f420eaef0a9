"""Study reports: a readable trials table, ``trials.csv`` plus PNG plots written atomically, and one
self-contained HTML page (``study_report_html``) for the Kubeflow Pipelines UI's HTML viewer.

Plots (``optuna.visualization.matplotlib``, Agg backend): ``optimization_history.png`` when a trial
completed, ``param_importances.png`` when at least two did, ``intermediate_values.png`` when some trial
reported per-epoch values.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from resume_ner.hpo.select import best_frozen_trial
from resume_ner.hpo.study import DIRECTION_ATTR, METRIC_ATTR
from resume_ner.io import write_bytes_atomic, write_text_atomic

if TYPE_CHECKING:
    import optuna
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
ATTR_COLUMNS = ("mlflow_run_id", "checkpoint", "pruned_epoch", "last_value", "error")
NOTE_CHARS = 80


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _seconds(trial: FrozenTrial) -> float | None:
    return trial.duration.total_seconds() if trial.duration is not None else None


def _best_number(study: optuna.Study) -> int | None:
    best = best_frozen_trial(study)
    return best.number if best is not None else None


def _trial_rows(study: optuna.Study) -> list[tuple[str, ...]]:
    """Header, then one row of display cells per trial: number (``*`` marks the best), state, value,
    duration, params, and the error of a failed trial (whole).

    A pruned trial's state is ``PRUNED@<epoch it was stopped after>`` and its value its last reported value
    in parentheses.
    """
    best = _best_number(study)
    rows: list[tuple[str, ...]] = [("#", "state", "value", "duration", "params", "error")]
    for trial in study.get_trials(deepcopy=False):
        state = trial.state.name
        value = _format(trial.value)
        error = ""
        if state == "PRUNED":
            state = f"PRUNED@{trial.user_attrs.get('pruned_epoch', '?')}"
            value = f"({_format(trial.user_attrs.get('last_value'))})"
        elif state == "FAIL":
            error = str(trial.user_attrs.get("error", ""))
        seconds = _seconds(trial)
        rows.append(
            (
                f"{'*' if trial.number == best else ' '}{trial.number}",
                state,
                value,
                f"{seconds:.1f}s" if seconds is not None else "",
                ", ".join(f"{k}={_format(v)}" for k, v in trial.params.items()),
                error,
            )
        )
    return rows


def trials_table(study: optuna.Study) -> str:
    """One line per trial: number (``*`` marks the best), state, value, duration, params, and a note.

    A pruned trial shows its last reported value in parentheses and the epoch it was stopped after; a failed
    one its error (cut to ``NOTE_CHARS``).
    """
    header, *trials = _trial_rows(study)
    rows = [(*header[:-1], "note"), *((*row[:-1], row[-1][:NOTE_CHARS]) for row in trials)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def trials_csv(study: optuna.Study) -> str:
    """Every trial as CSV: number, state, value, duration, times, one column per param and user attribute."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for trial in trials for name in trial.params})
    header = [
        "number",
        "state",
        "value",
        "duration_s",
        "datetime_start",
        "datetime_complete",
        *(f"params.{name}" for name in param_names),
        *ATTR_COLUMNS,
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for trial in trials:
        writer.writerow(
            [
                trial.number,
                trial.state.name,
                trial.value,
                _seconds(trial),
                trial.datetime_start.isoformat() if trial.datetime_start else None,
                trial.datetime_complete.isoformat() if trial.datetime_complete else None,
                *(trial.params.get(name) for name in param_names),
                *(trial.user_attrs.get(name) for name in ATTR_COLUMNS),
            ]
        )
    return buffer.getvalue()


def write_study_report(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write ``trials.csv`` and the PNG plots of ``study`` into ``out_dir``; return the files written."""
    out_dir = Path(out_dir)
    written = [write_text_atomic(out_dir / TRIALS_CSV, trials_csv(study))]
    for name, png in _plot_pngs(study):
        written.append(write_bytes_atomic(out_dir / f"{name}.png", png))
    log.info("hpo study %r: report in %s (%d file(s))", study.study_name, out_dir, len(written))
    return written


def study_report_html(study: optuna.Study) -> str:
    """One self-contained HTML page of ``study``: metric and direction, best trial, every trial, plots.

    The trials table has the cells of ``trials_table`` (a failed trial's error in full); the plots of
    ``write_study_report`` are embedded as base64 PNG ``data:`` URIs, so the page loads no external resource
    (the Kubeflow Pipelines UI shows it in a sandboxed frame). All text from the study is HTML-escaped. A
    study without a COMPLETE trial gets a line saying so instead of the best-trial section.
    """
    esc = html.escape
    name = esc(study.study_name)
    metric = esc(str(study.user_attrs.get(METRIC_ATTR, "objective value")))
    direction = esc(str(study.user_attrs.get(DIRECTION_ATTR, study.direction.name.lower())))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>HPO study {name}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
        "img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>HPO study {name}</h1>",
        f"<p>metric: <b>{metric}</b> ({direction})</p>",
    ]
    best = best_frozen_trial(study)
    if best is None:
        parts.append("<p>No COMPLETE trial: there is no best trial yet.</p>")
    else:
        parts.append(f"<h2>Best trial: {best.number}</h2>")
        parts.append(f"<p>{metric}: <b>{esc(_format(best.value))}</b></p>")
        parts.append("<table><tr><th>param</th><th>value</th></tr>")
        parts.extend(f"<tr><td>{esc(k)}</td><td>{esc(_format(v))}</td></tr>" for k, v in best.params.items())
        parts.append("</table>")
    header, *rows = _trial_rows(study)
    parts.append(f"<h2>Trials ({len(rows)})</h2><table>")
    parts.append("<tr>" + "".join(f"<th>{esc(cell)}</th>" for cell in header) + "</tr>")
    parts.extend("<tr>" + "".join(f"<td>{esc(cell.strip())}</td>" for cell in row) + "</tr>" for row in rows)
    parts.append("</table>")
    plots = _plot_pngs(study)
    if plots:
        parts.append("<h2>Plots</h2>")
    for plot, png in plots:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img alt="{esc(plot)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(plot)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _plot_pngs(study: optuna.Study) -> list[tuple[str, bytes]]:
    """(name, PNG bytes) of each plot of ``_plots``; the figures are closed."""
    plots = _plots(study)
    import matplotlib.pyplot as plt  # after _plots chose the Agg backend

    out = []
    for name, axes in plots:
        buffer = io.BytesIO()
        figure = cast("Figure", axes.figure)  # optuna draws each plot on a figure of its own
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        out.append((name, buffer.getvalue()))
    return out


def _plots(study: optuna.Study) -> list[tuple[str, Axes]]:
    """(name, matplotlib Axes) of each plot that the study's trials allow."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    target = study.user_attrs.get(METRIC_ATTR, "objective value")
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
