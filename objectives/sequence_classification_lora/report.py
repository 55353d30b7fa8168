"""The classification objective's part of the study report: the best trial's per-class
precision, recall and F1 on the test split, and its confusion matrix."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from objectives.base import FinishedTrial, ReportSection

TITLE = "Per-class results of the best trial (test split)"


def per_class_section(best: FinishedTrial | None) -> ReportSection:
    return ReportSection("classes", TITLE, _per_class(best))


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _per_class(best: FinishedTrial | None) -> str:
    if best is None:
        return _note("There is no single best trial.")
    classes, matrix = best.attrs.get("test_per_class"), best.attrs.get("test_confusion_matrix")
    labels = best.attrs.get("labels")
    if not (classes and matrix and labels):
        return _note(f"Trial {best.number} recorded no per-class figures.")
    head = "".join(f"<th>{name}</th>" for name in ("class", "precision", "recall", "F1",
                                                    "support"))
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{classes[label][key]:.3f}</td>"
                  for key in ("precision", "recall", "f1-score"))
        + f"<td>{int(classes[label]['support'])}</td></tr>" for label in labels)
    figure = go.Figure(go.Heatmap(
        z=matrix, x=labels, y=labels, colorscale="Blues", text=matrix, texttemplate="%{text}",
        hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    figure.update_layout(xaxis_title="predicted class", yaxis_title="true class",
                         yaxis_autorange="reversed", height=420, margin=dict(t=30))
    chart = figure.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                           config={"displaylogo": False, "responsive": True})
    return (_note(f"Trial {best.number}; rows of the confusion matrix are the true class.")
            + f'<div class="scroll"><table><tr>{head}</tr>{rows}</table></div>'
            + chart)
