import math

import pytest

from codenas.eval.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 2, 1, 2 / 5),                 # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),            # 1 - C(3,2)/C(5,2)
    (5, 2, 3, 1 - 1 / 10),            # 1 - C(3,3)/C(5,3)
    (10, 0, 5, 0.0),
    (10, 10, 10, 1.0),
    (4, 3, 2, 1.0),                   # n - c < k: some pass is certain
    (20, 1, 10, 0.5),                 # 1 - C(19,10)/C(20,10) = 1 - 10/20
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula_for_large_n():
    for n, c, k in [(200, 10, 10), (200, 37, 100), (100, 1, 1)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-9)


def test_pass_at_k_rejects_impossible_arguments():
    for n, c, k in [(5, 6, 1), (5, 2, 6), (5, 2, 0), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_problems():
    assert mean_pass_at_k([(5, 2), (5, 0), (5, 5)], 1) == pytest.approx((0.4 + 0 + 1) / 3)
