"""Data as every objective reads it: one pipeline from the files to the splits.

read (🤗 datasets: JSONL, JSON, CSV, TSV, Parquet, a folder of them; a UTF-8 BOM is fine) ->
map columns -> drop exact duplicates -> clean (NFKC, control characters, symbols, whitespace,
empty rows, long texts) -> drop normalised duplicates -> split (fractions over normalised
prompts, or the user's split files with leaks removed from training) -> balance the
training split's classes -> drop noisy training rows (perplexity) -> report what each step
did (``data_report.json``).

An objective turns its rows into ``Example`` (the turns before the answer, and the answer) and
back; the steps in between are the same for all.
"""
