"""The summary's data line and the report's data section, from a data report written by hand."""

from __future__ import annotations

import json

from objectives.base import DATA_REPORT
from search import data_report

REPORT = {
    "rows_read": 14, "rows_kept": 11, "summary": "data: 14 rows -> 11 (2 duplicates, 1 "
    "leaks removed from train); labels 2.0 : 1 in train", "leakage": "drop",
    "files": [{"path": "/d/train.csv", "split": "train", "rows": 10},
              {"path": "/d/val.csv", "split": "validation", "rows": 2},
              {"path": "/d/test.csv", "split": "test", "rows": 2}],
    "steps": [{"rule": "duplicates", "removed": 2, "changed": 0, "seconds": None,
               "examples": [{"where": "line 4", "before": "a <b>", "after": "same as line 2"}]},
              {"rule": "leaks", "removed": 1, "changed": 0, "seconds": None, "examples": []}],
    "splits": {"train": {"rows": 6, "labels": {"down": 2, "up": 4}},
               "validation": {"rows": 2, "labels": {"down": 1, "up": 1}},
               "test": {"rows": 2, "labels": {"down": 1, "up": 1}}},
    "labels": ["down", "up"], "train_labels_before_balancing": {"down": 2, "up": 4},
}


def test_the_summary_line_and_the_section_come_from_the_report(tmp_path):
    assert data_report.summary_line(tmp_path) is None and data_report.section(tmp_path) is None
    (tmp_path / DATA_REPORT).write_text(json.dumps(REPORT))
    assert data_report.summary_line(tmp_path) == REPORT["summary"]
    section = data_report.section(tmp_path)
    assert section.key == "data"
    assert "line 4: a &lt;b&gt; -&gt; same as line 2" in section.html  # escaped
    assert "<td>exact duplicates</td><td>2</td>" in section.html
    assert "<td>train</td><td>6</td><td>2</td><td>4</td>" in section.html
    assert "before balancing" not in section.html  # nothing was balanced
