"""What the data pipeline costs on a large file: read, clean, de-duplicate, split and tokenise
100,000 examples once per study, for each objective.

A CSV (classifier: text, label) and a JSONL file (causal LM: instruction, input, output) of
the same 100,000 rows are made from the shipped headlines, with 2 % exact and 2 % normalised
duplicates. For each: the first preparation (read with datasets, every cleaning rule at its
default, duplicates, the split, tokenising, Arrow files written) and the second (the study's
cached splits found), the median of the repetitions, each in a fresh cache folder.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import _common

FORMS = ["classifier", "causal"]


def write_files(folder: Path, rows: int) -> dict[str, Path]:
    source = [json.loads(line) for line in
              (_common.REPO / "data" / "finance_sentiment.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    table = []
    for i in range(rows):
        pick = source[i % len(source)]
        row = (f"{pick['input']} (report {i // len(source)})", pick["output"])
        roll = rng.random()
        if roll < 0.02 and table:
            row = table[rng.randrange(len(table))]  # an exact duplicate
        elif roll < 0.04 and table:
            text, label = table[rng.randrange(len(table))]
            row = (text.upper() + "!", label)  # a normalised one
        table.append(row)
    paths = {"classifier": folder / "large.csv", "causal": folder / "large.jsonl"}
    with paths["classifier"].open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        writer.writerows(table)
    paths["causal"].write_text("".join(json.dumps({"instruction": source[0]["instruction"],
                                                   "input": t, "output": label}) + "\n"
                                       for t, label in table), encoding="utf-8")
    return paths


def prepare(form: str, path: Path, root: Path) -> tuple[float, dict[str, Any]]:
    import datasets

    from objectives import get_objective
    from objectives.data.pipeline import forget_builds

    forget_builds()  # nothing remembered from the last repetition
    datasets.config.HF_DATASETS_CACHE = root / "hf-datasets"  # nor read by the library

    objective = get_objective("causal_lm_lora" if form == "causal" else
                              "sequence_classification_lora")
    config = objective.config_model.model_validate({"data": {"path": str(path)}})
    start = time.perf_counter()
    report = objective.prepare(config, root)
    return time.perf_counter() - start, report


def main() -> None:
    parse = _common.parser(__doc__.splitlines()[0])
    args = parse.parse_args()
    studies = _common.setup("data_pipeline")
    rows = 10_000 if args.quick else 100_000
    files = write_files(studies, rows)
    reps: list[dict[str, Any]] = [{"rep": rep} for rep in range(args.reps)]
    for rep, form in _common.alternating(args.reps, FORMS):
        root = studies / f"prepared-{rep}-{form}"
        first, report = prepare(form, files[form], root)
        again, _ = prepare(form, files[form], root)
        reps[rep][form] = {"first_s": first, "cached_s": again, "summary": report["summary"]}
        shutil.rmtree(root)
        print(f"  rep {rep} {form:<10} first {first:.1f} s, cached {again:.2f} s", flush=True)

    def med(form: str, key: str) -> float:
        return _common.median([r[form][key] for r in reps])

    table = [[form, med(form, "first_s"), rows / med(form, "first_s"), med(form, "cached_s")]
             for form in FORMS]
    print(f"\n{rows} rows, median of {args.reps} repetitions")
    print(_common.table(["objective", "first preparation s", "rows per s", "cached s"], table))
    for form in FORMS:
        print(f"  {form}: {reps[0][form]['summary']}")
    figures = {form: {"first_s": med(form, "first_s"), "cached_s": med(form, "cached_s"),
                      "rows_per_s": rows / med(form, "first_s")} for form in FORMS}
    settings = {"rows": rows, "reps": args.reps}
    notes = ["the first preparation includes writing the datasets library's Arrow cache of the "
             "file (in a fresh folder each time)"]
    print(f"\nwrote {_common.write('data_pipeline', settings, figures, reps, notes)}")


if __name__ == "__main__":
    main()
