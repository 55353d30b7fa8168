"""The causal-LM objective's part of the study report: the best trial's per-layer profile."""

from __future__ import annotations

import html
import json
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from objectives.base import FinishedTrial, ReportSection
from objectives.causal_lm_lora.config import LAYER_PROFILE

TITLE = "Per-layer profile of the best trial"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def read_layer_profile(path: Path) -> tuple[dict[str, dict[str, float]], int]:
    """Mean compute_time and memory_usage per layer name, in first-seen order, and the
    number of lines that were not well-formed records."""
    sums: dict[str, list[float]] = {}
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            name, ms, mb = record["layer_name"], float(record["compute_time"]), \
                float(record["memory_usage"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        total = sums.setdefault(str(name), [0.0, 0.0, 0])
        total[0] += ms
        total[1] += mb
        total[2] += 1
    means = {name: {"compute_time": ms / n, "memory_usage": mb / n, "records": n}
             for name, (ms, mb, n) in sums.items()}
    return means, bad


def layer_profile_section(best: FinishedTrial | None) -> ReportSection:
    return ReportSection("layers", TITLE, _layer_profile(best))


def _layer_profile(best: FinishedTrial | None) -> str:
    if best is None:
        return _note("There is no single best trial to profile.")
    path = best.trial_dir / LAYER_PROFILE
    if not path.is_file():
        return _note(f"No {LAYER_PROFILE} in {best.trial_dir}: the best trial was not profiled.")
    means, bad = read_layer_profile(path)
    if not means:
        return _note(f"{path} holds no well-formed record.")
    names = list(means)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("mean compute time (ms)", "mean memory (MB)"))
    fig.add_trace(go.Bar(x=names, y=[means[n]["compute_time"] for n in names],
                         marker_color="#1f77b4", name="compute time (ms)"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[means[n]["memory_usage"] for n in names],
                         marker_color="#ff7f0e", name="memory (MB)"), row=2, col=1)
    fig.update_layout(height=600, showlegend=False, margin=dict(t=40))
    skipped = _note(f"{bad} malformed lines skipped.") if bad else ""
    records = sum(int(m["records"]) for m in means.values())
    figure = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                         config={"displaylogo": False, "responsive": True})
    return (_note(f"{records} records from {path}; a block's time and memory include its "
                  "attention and MLP.") + figure + skipped)
