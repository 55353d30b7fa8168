"""One self-contained HTML report of a study, read from its Optuna storage alone.

plotly.js is embedded once and no file, script or font is fetched from anywhere, so the report
opens offline from file:// and can be mailed or archived as it is. Any Optuna study can be
reported, not only this project's: what a study lacks (intermediate values, a baseline trial,
a trial folder with a layer profile) becomes a note where its plot would be. Trial folders are
read only for extras: the final metrics in metrics.jsonl and the best trial's layer profile.
"""

from __future__ import annotations

import html
import json
import logging
import math
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
import plotly.offline
from optuna.exceptions import ExperimentalWarning
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from objectives import OBJECTIVES, get_objective
from objectives.base import ReportSection
from search import data_report
from search.comparison import COMPARISON, comparison_section
from search.heartbeat import HEARTBEAT
from search.history import RECOMMENDED, own
from search.storage import StudyPaths, finished_trial, mask, open_existing, pick_study
from search.summary import baseline_trial, best_trial, pareto_front, trial_score

BEST_ROWS = 10  # trials in the table of best trials
MAX_PARETO_ROWS = 20
# Numeric user attributes that are not metrics: a launcher's clock, links between trials.
BOOKKEEPING = {HEARTBEAT, "retry_of", "retried_as"}
PRUNED_GREY = "#b8b8b8"
BEST_COLOUR = "#d62728"
PLOT_CONFIG = {"displaylogo": False, "responsive": True}

Target = Callable[[FrozenTrial], float]


def write_report(storage_url: str, study_name: str | None, out: Path) -> Path:
    """Write the report of a study to ``out`` (one HTML file) and return its path.

    With ``study_name`` None the storage must hold exactly one study.
    """
    storage = open_existing(storage_url)
    name = pick_study(storage, study_name, storage_url)
    study = optuna.load_study(study_name=name, storage=storage)
    page = render(study, storage_url, StudyPaths.for_study(name))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.{uuid.uuid4().hex}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(out)  # a reader never sees half a report
    return out


@dataclass
class _Study:
    """What every section needs, read once."""

    study: optuna.Study
    trials: list[FrozenTrial]
    complete: list[FrozenTrial]
    names: list[str]  # one per objective
    directions: list[StudyDirection]
    best: FrozenTrial | None  # single-objective only
    varied: list[str]  # parameters with two values or more among complete trials
    constant: list[str]  # parameters that never varied among complete trials
    added: int = 0  # trials of earlier studies in the sampler's history

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    def targets(self) -> list[tuple[str, Target | None]]:
        """(name, target) per objective; Optuna needs an explicit target per objective."""
        if not self.multi:
            return [(self.names[0], None)]
        return [(name, _objective(i)) for i, name in enumerate(self.names)]


def _objective(index: int) -> Target:
    return lambda trial: trial.values[index]


def _read(study: optuna.Study) -> _Study:
    everything = study.get_trials(deepcopy=False)
    trials = own(everything)  # not those added from earlier studies (search.warm_start)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    directions = list(study.directions)
    names = study.metric_names or [
        study.user_attrs.get("metric", "objective value") if len(directions) == 1
        else f"objective {i}" for i in range(len(directions))]
    names = [str(name) for name in names]
    values: dict[str, set[str]] = {}
    for trial in complete:
        for key, value in trial.params.items():
            values.setdefault(key, set()).add(repr(value))
    best = best_trial(study) if len(directions) == 1 else None
    return _Study(study, trials, complete, names, directions, best,
                  varied=sorted(k for k, v in values.items() if len(v) > 1),
                  constant=sorted(k for k, v in values.items() if len(v) == 1),
                  added=len(everything) - len(trials))


def render(study: optuna.Study, storage_url: str, paths: StudyPaths | None = None) -> str:
    """The report page of ``study`` as one HTML string; ``paths`` is its folder, which may
    hold the comparison of the best trial with the untuned default."""
    info = _read(study)
    ranking, importance_html = _importances(info)
    sections = [
        ("summary", "Summary", _summary(info, storage_url)),
        ("history", "Optimisation history", _history(info)),
        ("curves", "Learning curves", _learning_curves(info)),
        ("parallel", "Parallel coordinates", _parallel(info)),
        ("importance", "Parameter importances", importance_html),
        ("slice", "Slice plots", _slices(info)),
        ("contour", "Contour of the two most important parameters", _contour(info, ranking)),
        ("timeline", "Timeline", _timeline(info)),
        ("best", "Best trials", _best_table(info)),
        ("baseline", "Best trial against the untuned baseline", _baseline(info)),
    ]
    if paths is not None and (paths.root / COMPARISON).is_file():
        section = comparison_section(paths.root / COMPARISON)
        sections.append((section.key, section.title, section.html))
    data = data_report.section(paths.root) if paths is not None else None
    if data is not None:
        sections.append((data.key, data.title, data.html))
    sections += [(s.key, s.title, s.html) for s in _objective_sections(info, paths)]
    if info.multi:
        sections.insert(2, ("pareto", "Pareto front", _pareto(info)))
    nav = " · ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "\n".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>\n{content}</section>'
                     for key, title, content in sections)
    title = html.escape(f"Study {study.study_name}")
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head><body>
<h1>{title}</h1>
<nav>{nav}</nav>
{body}
<footer>Made {made} from {html.escape(mask(storage_url))}.</footer>
</body></html>
"""


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
nav { font-size: .9em; margin-bottom: 1em; } section { margin-bottom: 2em; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; } .note { color: #666; font-style: italic; margin: .4em 0; }
.differs { font-weight: bold; } footer { color: #888; font-size: .8em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.summary dt { font-weight: bold; } dl.summary dd { margin: 0; }
"""


# --- plots and notes -------------------------------------------------------------------------

def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


class _Collect(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextmanager
def _optuna_notes() -> Iterator[list[str]]:
    """Optuna's warnings, from its logger and the warnings module, kept as notes for the page
    instead of being printed."""
    notes: list[str] = []
    logger = logging.getLogger("optuna")
    handlers, level = logger.handlers[:], logger.level
    logger.handlers = [_Collect(notes)]
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield notes
        notes.extend(str(w.message) for w in caught
                     if not issubclass(w.category, (ExperimentalWarning, FutureWarning)))
    finally:
        logger.handlers = handlers
        logger.setLevel(level)


def _has_data(fig: go.Figure) -> bool:
    for trace in fig.data:
        shown = trace.to_plotly_json()
        for key in ("x", "y", "z", "dimensions", "values"):
            value = shown.get(key)
            if value is not None and len(value) > 0:
                return True
    return False


def _plot(build: Callable[[], go.Figure], height: int = 450) -> str:
    """A plot drawn by ``build``, with Optuna's warnings under it, or a note in its place."""
    with _optuna_notes() as notes:
        try:
            fig = build()
        except ValueError as error:  # what optuna.visualization raises for what it cannot draw
            notes.append(str(error))
            fig = None
    text = "".join(_note(n) for n in dict.fromkeys(notes))  # each note once, in order
    if fig is None or not _has_data(fig):
        return text or _note("Nothing to draw.")
    if fig.layout.height is None:
        fig.update_layout(height=height)
    return _figure_html(fig) + text


def _figure_html(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                       config=PLOT_CONFIG)


def _no_complete(info: _Study) -> str | None:
    if not info.trials:
        return _note("The study has no trials yet.")
    if not info.complete:
        return _note("No trial completed, so there is nothing to plot against the parameters.")
    return None


def _no_varied(info: _Study, needed: int = 1) -> str | None:
    if len(info.varied) >= needed:
        return None
    constant = f" (never varied: {', '.join(info.constant)})" if info.constant else ""
    have = ", ".join(info.varied) or "none"
    return _note(f"This needs {needed} parameter{'s' if needed > 1 else ''} that took different "
                 f"values among the complete trials; varied: {have}{constant}.")


def _constant_note(info: _Study) -> str:
    if not info.constant:
        return ""
    return _note(f"Not shown, as every complete trial had the same value: "
                 f"{', '.join(info.constant)}.")


# --- sections --------------------------------------------------------------------------------

def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _last_step(trial: FrozenTrial) -> int | None:
    return max(trial.intermediate_values) if trial.intermediate_values else None


def early_stopping_savings(trials: list[FrozenTrial]) -> tuple[int, int] | None:
    """(steps run, steps had every trial run to the largest step any trial reached), over the
    complete and pruned trials that reported intermediate values; None when none did."""
    last = [_last_step(t) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.intermediate_values]
    if not last:
        return None
    return sum(last), max(last) * len(last)


def _summary(info: _Study, storage_url: str) -> str:
    study = info.study
    counts = {state: 0 for state in TrialState}
    for trial in info.trials:
        counts[trial.state] += 1
    rows: list[tuple[str, str]] = [("Study", study.study_name),
                                   ("Storage", mask(storage_url))]
    if "space_file" in study.user_attrs:
        rows.append(("Space file", str(study.user_attrs["space_file"])))
    objectives = zip(info.names, info.directions, strict=True)
    rows.append(("Objective", "; ".join(f"{name} ({d.name.lower()})" for name, d in objectives)))
    if info.best is not None:
        rows.append(("Best", f"{_format(info.best.value)} (trial {info.best.number})"))
    elif info.multi and info.complete:
        rows.append(("Best", f"{len(pareto_front(study))} trials on the Pareto front"))
    else:
        rows.append(("Best", "none: no trial completed"))
    rows.append(("Trials", f"{len(info.trials)}: {counts[TrialState.COMPLETE]} complete, "
                 f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
                 f"{counts[TrialState.RUNNING]} running"
                 + (f", {counts[TrialState.WAITING]} waiting" if counts[TrialState.WAITING]
                    else "")))
    if info.added:
        rows.append(("Warm start", f"{info.added} trials of earlier studies in the sampler's "
                     "history (not counted above; study.warm_start)"))
    finished = [t.duration.total_seconds() for t in info.trials if t.duration is not None]
    starts = [t.datetime_start for t in info.trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in info.trials if t.datetime_complete is not None]
    time_text = f"{_duration(sum(finished))} in {len(finished)} finished trials"
    if starts and ends:
        span = (max(ends) - min(starts)).total_seconds()
        time_text += f"; first start to last end {_duration(span)}"
    rows.append(("Trial time", time_text))
    savings = early_stopping_savings(info.trials)
    if savings is None:
        rows.append(("Early stopping", "not measurable: no trial reported intermediate values"))
    else:
        run, full = savings
        saved = 1 - run / full if full else 0.0
        rows.append(("Early stopping", f"{run} steps run of {full} had every trial run to the "
                     f"last step reached: {saved:.0%} of the compute saved"))
    items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
    return f'<dl class="summary">{items}</dl>'


def _history(info: _Study) -> str:
    if (missing := _no_complete(info)) is not None:
        return missing
    return "".join(_plot(lambda t=target, n=name: optuna.visualization.plot_optimization_history(
        info.study, target=t, target_name=n)) for name, target in info.targets())


def _learning_curves(info: _Study) -> str:
    reported = [t for t in info.trials if t.intermediate_values]
    if not reported:
        return _note("No trial reported intermediate values, so there are no learning curves.")
    fig = go.Figure()
    styles = {
        TrialState.COMPLETE: ("complete", dict(color="#1f77b4", width=1.5)),
        TrialState.PRUNED: ("pruned", dict(color=PRUNED_GREY, width=1)),
        TrialState.FAIL: ("failed", dict(color="#e8a0a0", width=1, dash="dot")),
        TrialState.RUNNING: ("running", dict(color="#2ca02c", width=1, dash="dash")),
    }
    shown: set[str] = set()
    # The best trial last, so that it is drawn on top.
    ordered = sorted(reported, key=lambda t: info.best is not None and t.number == info.best.number)
    for trial in ordered:
        is_best = info.best is not None and trial.number == info.best.number
        group, line = ("best", dict(color=BEST_COLOUR, width=3)) if is_best else styles.get(
            trial.state, (trial.state.name.lower(), dict(color="#999", width=1)))
        steps = sorted(trial.intermediate_values)
        fig.add_trace(go.Scatter(
            x=steps, y=[trial.intermediate_values[s] for s in steps], mode="lines+markers",
            line=line, marker=dict(size=4), name=f"best (trial {trial.number})" if is_best
            else group, legendgroup=group, showlegend=group not in shown,
            hovertemplate=f"trial {trial.number} ({trial.state.name.lower()})<br>"
                          "step %{x}<br>%{y:.4g}<extra></extra>"))
        shown.add(group)
    fig.update_layout(xaxis_title="step", yaxis_title=info.names[0], height=450,
                      margin=dict(t=30))
    return _figure_html(fig)


def _parallel(info: _Study) -> str:
    if (missing := _no_complete(info) or _no_varied(info)) is not None:
        return missing
    return _plot(lambda: optuna.visualization.plot_parallel_coordinate(
        info.study, params=info.varied, target_name=info.names[0])) + _constant_note(info)


def _importances(info: _Study) -> tuple[list[str], str]:
    """Parameters from most to least important, and the section.

    Computed once here, not by plot_param_importances: the ranking also picks the contour's
    axes, and when the evaluator gives up (too few trials, all values equal) the page shows
    its reason instead of equal bars.
    """
    if (missing := _no_complete(info) or _no_varied(info)) is not None:
        return [], missing
    if len(info.complete) < 2:
        return [], _note("Importances need at least two complete trials.")
    with _optuna_notes() as notes:
        try:
            importances = optuna.importance.get_param_importances(
                info.study, evaluator=PedAnovaImportanceEvaluator(), params=info.varied)
        except ValueError as error:  # e.g. parameters whose ranges changed between trials
            notes.append(str(error))
            importances = {}
    text = "".join(_note(n) for n in dict.fromkeys(notes))
    # The evaluator gives up by warning and returning equal importances: no ranking then.
    if not importances or (notes and len(set(importances.values())) == 1):
        return [], text or _note("Importances could not be computed.")
    ranking = list(importances)
    fig = go.Figure(go.Bar(x=[importances[p] for p in reversed(ranking)],
                           y=list(reversed(ranking)), orientation="h",
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 30 * len(ranking), xaxis_title="importance",
                      margin=dict(t=30))
    fig.update_yaxes(automargin=True)
    return ranking, (_figure_html(fig) + _note(f"PED-ANOVA over {len(info.complete)} complete "
                                               "trials.") + text + _constant_note(info))


def _slices(info: _Study) -> str:
    if (missing := _no_complete(info) or _no_varied(info)) is not None:
        return missing
    return "".join(_plot(lambda t=target, n=name: optuna.visualization.plot_slice(
        info.study, params=info.varied, target=t, target_name=n))
        for name, target in info.targets()) + _constant_note(info)


def _contour(info: _Study, ranking: list[str]) -> str:
    if (missing := _no_complete(info) or _no_varied(info, 2)) is not None:
        return missing
    pair = ranking[:2] if len(ranking) >= 2 else info.varied[:2]
    how = "" if len(ranking) >= 2 else _note(
        "No importance ranking: the first two varied parameters by name are shown.")
    return how + "".join(_plot(lambda t=target, n=name: optuna.visualization.plot_contour(
        info.study, params=pair, target=t, target_name=n), height=550)
        for name, target in info.targets())


def _timeline(info: _Study) -> str:
    if not any(t.datetime_start for t in info.trials):
        return _note("No trial has started yet.")
    return _plot(lambda: optuna.visualization.plot_timeline(info.study))


def _pareto(info: _Study) -> str:
    if (missing := _no_complete(info)) is not None:
        return missing
    return _plot(lambda: optuna.visualization.plot_pareto_front(
        info.study, target_names=info.names), height=550)


def _trial_metrics(trial: FrozenTrial) -> dict[str, float]:
    """Numeric user attributes, and the last evaluation in the trial's metrics.jsonl."""
    metrics = {k: v for k, v in trial.user_attrs.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in BOOKKEEPING}
    folder = trial.user_attrs.get("trial_dir")
    path = Path(folder) / "metrics.jsonl" if isinstance(folder, str) else None
    if path is not None and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        try:
            last = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            last = {}
        metrics.update({k: v for k, v in last.items() if k != "step" and
                        isinstance(v, (int, float)) and not isinstance(v, bool)})
    return metrics


def _ranked(info: _Study) -> list[FrozenTrial]:
    if info.multi:
        front = pareto_front(info.study)
        return front[:MAX_PARETO_ROWS]
    sign = 1 if info.directions[0] == StudyDirection.MINIMIZE else -1
    return sorted(info.complete, key=lambda t: (sign * t.value, t.number))[:BEST_ROWS]


def _cell(value: Any, cls: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    classes = " ".join(c for c in (cls, "num" if numeric else "") if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{html.escape(_format(value))}</td>"


def _best_table(info: _Study) -> str:
    if (missing := _no_complete(info)) is not None:
        return missing
    trials = _ranked(info)
    params = sorted({key for t in trials for key in t.params})
    metrics = {t.number: _trial_metrics(t) for t in trials}
    metric_keys = sorted({key for m in metrics.values() for key in m})
    head = ["trial", *info.names, *params, *metric_keys, "steps", "duration"]
    rows = []
    for trial in trials:
        mark = (" (baseline)" if trial.user_attrs.get("baseline") else
                " (recommended)" if trial.user_attrs.get(RECOMMENDED) else "")
        cells = [f"<td>{trial.number}{mark}</td>", *(_cell(v) for v in trial.values),
                 *(_cell(trial.params.get(p, "")) for p in params),
                 *(_cell(metrics[trial.number].get(k, "")) for k in metric_keys),
                 _cell(_last_step(trial) if trial.intermediate_values else ""),
                 _cell(_duration(trial.duration.total_seconds()) if trial.duration else "")]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    what = ("The trials on the Pareto front" if info.multi
            else f"The {len(trials)} best of {len(info.complete)} complete trials")
    return (_note(f"{what}; metrics are numeric user attributes and the last line of the "
                  "trial's metrics.jsonl.")
            + f'<div class="scroll"><table><tr>{header}</tr>{"".join(rows)}</table></div>')


def _baseline(info: _Study) -> str:
    baseline = baseline_trial(info.study)
    if baseline is None:
        return _note("No trial carries the user attribute baseline=True, so there is no untuned "
                     "reference to compare with.")
    if info.multi:
        values = ", ".join(_format(v) for v in baseline.values or [])
        return _note(f"The untuned baseline is trial {baseline.number} ({values or 'no values'}"
                     "); a multi-objective study has no single best trial to set against it.")
    if info.best is None:
        return _note(f"The untuned baseline is trial {baseline.number}; no trial completed.")
    best, metric = info.best, info.names[0]
    minimize = info.directions[0] == StudyDirection.MINIMIZE
    base_score = trial_score(baseline, minimize)
    if best.number == baseline.number:
        return _note(f"The untuned baseline (trial {baseline.number}) is the best trial.")
    if base_score is None:
        text = (f"The untuned baseline (trial {baseline.number}) {baseline.state.name.lower()} "
                "without a value to compare.")
    else:
        change = (best.value - base_score) / abs(base_score) if base_score else math.nan
        how = ("" if baseline.state == TrialState.COMPLETE
               else " (its best evaluation before it stopped)")
        text = (f"Best trial {best.number}: {metric} {_format(best.value)}; untuned baseline "
                f"(trial {baseline.number}): {_format(base_score)}{how}; change {change:+.1%}.")
    params = sorted(set(best.params) | set(baseline.params))
    rows = [f"<tr><th>{html.escape(metric)}</th>{_cell('' if base_score is None else base_score)}"
            f"{_cell(best.value)}</tr>"]
    for key in params:
        old, new = baseline.params.get(key, ""), best.params.get(key, "")
        differs = "differs" if old != new else ""
        rows.append(f'<tr><th class="{differs}">{html.escape(key)}</th>{_cell(old, differs)}'
                    f"{_cell(new, differs)}</tr>")
    table = (f"<table><tr><th></th><th>baseline (trial {baseline.number})</th>"
             f"<th>best (trial {best.number})</th></tr>{''.join(rows)}</table>")
    curves = ""
    if baseline.intermediate_values and best.intermediate_values:
        fig = go.Figure()
        for trial, label, colour in ((baseline, "baseline", "#7f7f7f"),
                                     (best, "best", BEST_COLOUR)):
            steps = sorted(trial.intermediate_values)
            fig.add_trace(go.Scatter(x=steps, y=[trial.intermediate_values[s] for s in steps],
                                     mode="lines+markers", line=dict(color=colour),
                                     name=f"{label} (trial {trial.number})"))
        fig.update_layout(xaxis_title="step", yaxis_title=metric, height=380,
                          margin=dict(t=30))
        curves = _figure_html(fig)
    return _note(text) + table + curves


def _objective_sections(info: _Study, paths: StudyPaths | None) -> list[ReportSection]:
    """What the objective that made the study adds (e.g. the best trial's layer profile)."""
    name = info.study.user_attrs.get("objective")
    if name not in OBJECTIVES:
        return []
    folder = paths or StudyPaths.for_study(info.study.study_name)
    best = finished_trial(info.study, info.best, folder) if info.best else None
    return get_objective(name).report_sections(best)
