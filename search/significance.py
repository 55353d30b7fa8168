"""Paired comparisons of two models answering the same examples.

McNemar's exact test for exact-match accuracy, a paired permutation test and a bootstrap interval
for any corpus metric (BLEU, ROUGE-L, macro-F1), and the sign test for human ratings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

Metric = Callable[[list[Any]], float]  # a corpus metric of per-example rows


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[float, int, int]:
    """McNemar's exact test: (two-sided p, examples only a got right, examples only b got right).

    Under the null the discordant pairs split 50/50, so the smaller count is binomial; concordant
    pairs carry no information. With no discordant pair p is 1.
    """
    _check_paired(a_correct, b_correct)
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    p = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5, alternative="two-sided").pvalue
    return float(p), a_only, b_only


def paired_bootstrap(n: int, statistic: Callable[[np.ndarray], float], n_resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of ``statistic(indices)`` over resampled example indices.

    The statistic sees the same indices for both models, which keeps the pairing. Percentile
    intervals (not BCa, which is NaN for a degenerate distribution) make a constant statistic a
    zero-width interval. With one example every resample is that example, so the interval is its
    value.
    """
    if n < 1:
        raise ValueError("the bootstrap needs at least one example")
    if n == 1:
        value = float(statistic(np.arange(1)))
        return value, value
    result = stats.bootstrap((np.arange(n),), statistic, n_resamples=n_resamples,
                             confidence_level=confidence, method="percentile",
                             vectorized=False, random_state=seed)
    low, high = result.confidence_interval
    return float(low), float(high)


def bootstrap_difference(a_rows: Sequence[Any], b_rows: Sequence[Any], metric: Metric,
                         n_resamples: int = 2000, confidence: float = 0.95,
                         seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of ``metric(a_rows) - metric(b_rows)`` over the shared examples."""
    _check_paired(a_rows, b_rows)

    def difference(indices: np.ndarray) -> float:
        return metric([a_rows[i] for i in indices]) - metric([b_rows[i] for i in indices])

    return paired_bootstrap(len(a_rows), difference, n_resamples, confidence, seed)


def paired_permutation_p(a_rows: Sequence[Any], b_rows: Sequence[Any], metric: Metric,
                         n_resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p that ``metric(a_rows) - metric(b_rows)`` is no chance difference.

    Under the null either model could have given either answer, so each example's pair is
    swapped or not; with at most ``n_resamples`` swap patterns all of them are tried (exact).
    """
    _check_paired(a_rows, b_rows)
    rows = [*a_rows, *b_rows]  # the samples are indices into rows: a's, then b's

    def difference(a_indices: np.ndarray, b_indices: np.ndarray) -> float:
        return metric([rows[i] for i in a_indices]) - metric([rows[i] for i in b_indices])

    n = len(a_rows)
    result = stats.permutation_test((np.arange(n), np.arange(n, 2 * n)), difference,
                                    permutation_type="samples", vectorized=False,
                                    n_resamples=n_resamples, alternative="two-sided",
                                    random_state=seed)
    return float(result.pvalue)


def sign_test(wins: int, losses: int) -> float:
    """The two-sided exact sign test of wins against losses (ties left out); 1 with neither."""
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def _check_paired(a_rows: Sequence[Any], b_rows: Sequence[Any]) -> None:
    if len(a_rows) != len(b_rows):
        raise ValueError(f"{len(a_rows)} rows for a but {len(b_rows)} for b")
    if not a_rows:
        raise ValueError("no examples to compare")
