"""Paired tests against a published table, binomials worked by hand and synthetic effects."""

from __future__ import annotations

import numpy as np
import pytest

from search.significance import (
    bootstrap_difference,
    mcnemar_exact,
    paired_bootstrap,
    paired_permutation_p,
    sign_test,
)


def mean(rows: list[float]) -> float:
    return float(np.mean(rows))


def pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_mcnemar_exact_on_a_published_table() -> None:
    # Fagerland, Lydersen & Laake, "The McNemar test for binary matched-pairs data: mid-p and
    # asymptotic are better than exact conditional", BMC Med Res Methodol 13:91 (2013), Table 1
    # (Bentur et al. 2009): airway hyper-responsiveness in 21 children before / after stem cell
    # transplantation: 1 yes/yes, 1 yes/no, 7 no/yes, 12 no/no. The exact conditional p the
    # paper reports is 0.070. By hand: 8 discordant pairs, the smaller side has 1, so
    # p = 2 * P(X <= 1 | X ~ Bin(8, 1/2)) = 2 * (1 + 8) / 256 = 18/256 = 0.0703125.
    a, b = pairs(both=1, a_only=1, b_only=7, neither=12)
    p, a_only, b_only = mcnemar_exact(a, b)
    assert (a_only, b_only) == (1, 7)
    assert p == pytest.approx(18 / 256)
    assert round(p, 3) == 0.070
    assert mcnemar_exact(b, a) == (pytest.approx(18 / 256), 7, 1)


def test_mcnemar_exact_edge_cases() -> None:
    assert mcnemar_exact(*pairs(both=5, a_only=0, b_only=0, neither=3)) == (1.0, 0, 0)
    # 3 against 3: P(X <= 3 | Bin(6, 1/2)) = 42/64, doubled above 1, so p = 1.
    assert mcnemar_exact(*pairs(both=0, a_only=3, b_only=3, neither=0)) == (1.0, 3, 3)
    # 0 against 5: p = 2 / 32.
    assert mcnemar_exact(*pairs(both=0, a_only=0, b_only=5, neither=0))[0] == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="3 rows for a but 2 for b"):
        mcnemar_exact([True] * 3, [True] * 2)


def test_bootstrap_covers_a_known_difference() -> None:
    # a is right with probability 0.8, b with 0.5, independently: the true difference is 0.3.
    rng = np.random.default_rng(1)
    n = 400
    a = (rng.random(n) < 0.8).astype(float)
    b = (rng.random(n) < 0.5).astype(float)
    low, high = paired_bootstrap(n, lambda idx: a[idx].mean() - b[idx].mean())
    assert low < 0.3 < high
    assert low > 0
    # Standard error sqrt((0.8 * 0.2 + 0.5 * 0.5) / 400) = 0.032: a 95 % interval ~0.126 wide.
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(0.41 / n), rel=0.15)
    assert (low, high) == bootstrap_difference(list(a), list(b), mean)
    assert bootstrap_difference(list(a), list(b), mean, seed=1) != (low, high)


def test_bootstrap_of_a_constant_statistic_is_a_point() -> None:
    same = [1.0, 0.0, 1.0, 1.0, 0.0] * 8
    assert bootstrap_difference(same, same, mean) == (0.0, 0.0)
    assert paired_bootstrap(30, lambda idx: 0.25) == (0.25, 0.25)
    assert paired_bootstrap(1, lambda idx: float(idx.sum()) + 2) == (2.0, 2.0)


def test_permutation_p_exact_by_hand() -> None:
    # Three pairs, a right and b wrong in each: 2**3 = 8 swap patterns, all tried. The observed
    # difference 1 is reached only by no swap and -1 only by swapping all: P(>= 1) = 1/8, and
    # p = 2 * 1/8.
    assert paired_permutation_p([1, 1, 1], [0, 0, 0], mean) == pytest.approx(0.25)


def test_permutation_p_for_a_big_effect_and_for_none() -> None:
    rng = np.random.default_rng(0)
    a = list((rng.random(200) < 0.9).astype(float))
    b = list((rng.random(200) < 0.3).astype(float))
    # No random swap reaches the observed difference: p = 2 * (0 + 1) / (2000 + 1).
    assert paired_permutation_p(a, b, mean) == pytest.approx(2 / 2001)
    # Identical answers: every swap gives the same difference, 0.
    assert paired_permutation_p(a, a, mean) == 1.0


def test_permutation_p_is_large_for_models_of_equal_skill() -> None:
    rng = np.random.default_rng(3)
    a = list((rng.random(300) < 0.6).astype(float))
    b = list(rng.permutation(a))  # the same accuracy, right on other examples
    assert paired_permutation_p(a, b, mean) > 0.5


def test_sign_test() -> None:
    # 16 wins, 3 losses: p = 2 * (C(19,0) + C(19,1) + C(19,2) + C(19,3)) / 2**19
    #                      = 2 * (1 + 19 + 171 + 969) / 524288 = 2320 / 524288.
    assert sign_test(16, 3) == pytest.approx(2320 / 524288)
    assert sign_test(3, 16) == pytest.approx(2320 / 524288)
    assert sign_test(0, 0) == 1.0
    assert sign_test(4, 4) == 1.0
