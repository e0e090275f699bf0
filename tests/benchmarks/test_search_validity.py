"""`benchmarks/search_validity.py`: its rank correlations, its draw of shapes, and a smoke run so it cannot rot."""

from __future__ import annotations

import json
import math

import pytest

from codenas.search.space import SearchSpace, count_params

from . import scripts


def _module():
    return scripts.load("search_validity")


def test_kendall_tau_b_and_spearman_rho_match_known_values():
    m = _module()
    # scipy.stats.kendalltau's documented example (tau-b with ties in both sequences)
    assert m.kendall_tau([12, 2, 1, 12, 2], [1, 4, 7, 1, 0]) == pytest.approx(-0.47140452079103173)
    # scipy.stats.spearmanr's documented example (a tie in the second sequence)
    assert m.spearman_rho([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert m.kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0 == m.spearman_rho([1, 2, 3], [10, 20, 30])
    assert m.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0 == m.spearman_rho([1, 2, 3], [3, 2, 1])
    assert math.isnan(m.kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(m.spearman_rho([1, 2], [5, 5]))
    assert m._ranks([10, 30, 20, 30]) == [1.0, 3.5, 2.0, 3.5]


def test_the_draw_is_distinct_seeded_and_within_the_budget():
    m = _module()
    space = SearchSpace(n_layer=(1, 3), n_head=(2,), d_model=(16, 32, 64), d_ff_ratio=(2,), context_length=(16,))
    shapes = m.sample_archs(5, 40_000, 300, 0, space)
    assert len({json.dumps(a.to_dict(), sort_keys=True) + o for a, o in shapes}) == 5
    assert all(count_params(a) <= 40_000 for a, _ in shapes)
    assert shapes == m.sample_archs(5, 40_000, 300, 0, space)


def test_every_shape_is_scored_on_at_least_the_asked_held_out_tokens():
    m = _module()
    assert m.eval_batches_for(50_000, 4, 256) == 49  # 49 * 4 * 256 = 50,176 >= 50,000 > 48 * 4 * 256
    assert m.eval_batches_for(50_000, 4, 128) == 98
    assert m.eval_batches_for(10, 4, 256) == 1


def test_full_runs_are_reused_only_from_a_run_with_the_same_settings(tmp_path):
    m = _module()
    args = {k: 1 for k in m.FULL_RUN_ARGS}
    data = m.BenchData(tokenizer=tmp_path / "t.json", corpus=tmp_path, val_tokens=1000)
    shape = {"arch": {"n_layer": 2}, "optimizer": "adamw", "full": 4.2}
    earlier = tmp_path / "search_validity.json"
    earlier.write_text(json.dumps({"args": {**args, "lr": 3.0}, "budgets": {"full": 80},
                                   "val_split_tokens": 1000, "shapes": [shape]}))
    runs = m.full_runs_from(earlier, args, data, {"full": 80})
    assert runs == {json.dumps([{"n_layer": 2}, "adamw"], sort_keys=True): shape}
    with pytest.raises(SystemExit, match="full_lr: 1 there, 2 here"):
        m.full_runs_from(earlier, {**args, "full_lr": 2}, data, {"full": 80})
    with pytest.raises(SystemExit, match="full budget"):
        m.full_runs_from(earlier, args, data, {"full": 160})


@pytest.mark.slow
def test_smoke_run_reports_every_predictor_and_the_headline(tmp_path):
    proc = scripts.run("search_validity", ["--smoke", "--threads", "1", "--quiet", "--out", str(tmp_path / "out")],
                       tmp_path, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("kendall_tau: ")
    summary = json.loads((tmp_path / "out" / "search_validity.json").read_text())
    assert float(lines[-1].split(": ")[1]) == pytest.approx(summary["correlations"]["proxy"]["kendall_tau"], abs=1e-3)
    assert set(summary["correlations"]) == {"proxy", "proxy_half", "proxy_quarter", "proxy_extrapolated",
                                            "non_embedding_params", "flops_per_token"}
    assert summary["val_split_tokens"] >= 256
    assert all(-1 <= c["kendall_tau"] <= 1 and -1 <= c["spearman_rho"] <= 1 for c in summary["correlations"].values())
    budgets = summary["budgets"]
    assert budgets["full"] == 8 * budgets["proxy"] == 16 * budgets["proxy_half"] == 32 * budgets["proxy_quarter"]
    assert len(summary["shapes"]) == 3
    for shape in summary["shapes"]:
        assert 0 < shape["proxy_tokens"] <= budgets["proxy"] < shape["full_tokens"] <= budgets["full"]
        assert shape["full"] < shape["proxy_quarter"]  # 32x the tokens of the same shape and seed learns more
        assert shape["val_tokens_scored"] >= 256
    # the extrapolated proxy as the headline, against the same full runs (only the proxies train again)
    again = scripts.run("search_validity", ["--smoke", "--threads", "1", "--quiet", "--extrapolate", "--out",
                                            str(tmp_path / "again"), "--full-from",
                                            str(tmp_path / "out" / "search_validity.json")], tmp_path, timeout=600)
    rerun = json.loads((tmp_path / "again" / "search_validity.json").read_text())
    assert rerun["score"] == "proxy_extrapolated"
    assert float(again.stdout.strip().splitlines()[-1].split(": ")[1]) == pytest.approx(
        rerun["correlations"]["proxy_extrapolated"]["kendall_tau"], abs=1e-3)
