"""What was done to a study's data, as the objective's prepare reported it: the summary's
line and the report's section (``studies/<name>/data_report.json``)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from objectives.base import DATA_REPORT, ReportSection

TITLE = "Data"
RULES = {
    "nfkc": "Unicode NFKC (full-width to half-width)", "strip_control": "control characters",
    "strip_symbols": "symbols", "collapse_whitespace": "whitespace collapsed",
    "empty": "empty after cleaning", "max_tokens": "over max_tokens",
    "duplicates": "exact duplicates", "near_duplicates": "normalised duplicates",
    "leaks": "in validation or test too (removed from train)",
    "validation_leaks": "validation examples also in test",
    "max_class_ratio": "down-sampled to max_class_ratio",
    "max_perplexity": "over max_perplexity",
}


def read(root: Path) -> dict[str, Any] | None:
    path = root / DATA_REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def summary_line(root: Path) -> str | None:
    report = read(root)
    return report.get("summary") if report else None


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def section(root: Path) -> ReportSection | None:
    report = read(root)
    if report is None:
        return None
    esc = html.escape
    files = _table(["file", "split", "rows read"], [
        [esc(f["path"]), esc(f["split"]), str(f["rows"])] for f in report["files"]])
    steps = _table(["rule", "rows removed", "rows changed", "examples (before -> after)"], [
        [esc(RULES.get(s["rule"], s["rule"])), str(s["removed"]), str(s["changed"]),
         "<br>".join(esc(f"{e['where']}: {e['before']}" + (f" -> {e['after']}"
                                                          if "after" in e else ""))
                     for e in s["examples"])
         + (f"<br>({s['seconds']} s)" if s.get("seconds") is not None else "")]
        for s in report["steps"]]) if report["steps"] else \
        '<p class="note">No rule removed or changed a row.</p>'
    labels = report.get("labels") or []
    before = report.get("train_labels_before_balancing") or {}
    header = ["split", "rows", *labels]
    rows = [[name, str(split["rows"]), *(str((split["labels"] or {}).get(label, ""))
                                         for label in labels)]
            for name, split in report["splits"].items()]
    if before and before != report["splits"]["train"]["labels"]:
        rows.insert(0, ["train before balancing", str(sum(before.values())),
                        *(str(before.get(label, "")) for label in labels)])
    splits = _table(header, [[esc(cell) for cell in row] for row in rows])
    return ReportSection("data", TITLE, f"<p>{esc(report['summary'])}</p>"
                         f'<p class="note">Leakage: {esc(report["leakage"])}.</p>'
                         + files + steps + splits)
