"""Ranking, Pareto front, plot and best arch, built from an in-memory study (no training)."""

from __future__ import annotations

import json

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from codenas.io import read_jsonl
from codenas.model.config import ArchConfig
from codenas.search.report import (
    best_row,
    dominates,
    front_objectives,
    pareto_front,
    ranked_rows,
    rows_table,
    write_outputs,
)

DISTRIBUTIONS = {
    "n_layer": IntDistribution(1, 8), "n_head": CategoricalDistribution((2, 3)),
    "d_model": CategoricalDistribution((32, 64)), "d_ff_ratio": CategoricalDistribution((2, 4)),
    "context_length": CategoricalDistribution((64,)), "dropout": FloatDistribution(0.0, 0.3),
}


def _trial(state, n_layer, params, *, value=None, intermediate=None, infeasible=None, n_head=2):
    sampled = {"n_layer": n_layer, "n_head": n_head, "d_model": 32, "d_ff_ratio": 2, "context_length": 64,
               "dropout": 0.1}
    attrs = {"params": params, "latency_ms": 1.5}
    if n_head == 2:
        attrs["arch"] = ArchConfig(n_layer=n_layer, n_head=2, d_model=32, d_ff=64, context_length=64,
                                   vocab_size=300, dropout=0.1, name=f"l{n_layer}").to_dict()
    if infeasible:
        attrs["infeasible"] = infeasible
    return create_trial(state=state, value=value, params=sampled, distributions=DISTRIBUTIONS, user_attrs=attrs,
                        intermediate_values=intermediate or {})


def _study() -> optuna.Study:
    study = optuna.create_study()
    for t in (
        _trial(TrialState.COMPLETE, 1, 1000, value=3.0, intermediate={1: 3.5, 2: 3.0}),
        _trial(TrialState.COMPLETE, 2, 2000, value=2.5, intermediate={1: 3.2, 2: 2.5}),
        _trial(TrialState.COMPLETE, 3, 3000, value=2.8, intermediate={1: 3.3, 2: 2.8}),  # dominated by l2
        _trial(TrialState.PRUNED, 4, 4000, intermediate={1: 3.9}),
        _trial(TrialState.PRUNED, 5, 9000, infeasible="9,000 parameters > max 5,000"),
        _trial(TrialState.PRUNED, 6, None, infeasible="d_model 32 is not a multiple of n_head 3", n_head=3),
        _trial(TrialState.FAIL, 7, 1500),
    ):
        study.add_trial(t)
    return study


def test_rows_are_ranked_by_state_then_loss():
    rows = ranked_rows(_study())
    assert [r["n_layer"] for r in rows] == [2, 3, 1, 4, 5, 6, 7]
    assert [r["state"] for r in rows] == ["complete"] * 3 + ["pruned", "infeasible", "infeasible", "failed"]
    assert [r["rank"] for r in rows] == list(range(1, 8))
    pruned = rows[3]
    assert pruned["val_loss"] == 3.9 and pruned["evals"] == 1
    assert rows[5]["d_ff"] == 64 and rows[5]["params"] is None and "multiple" in rows[5]["reason"]


def test_pareto_front_keeps_only_undominated_complete_trials():
    rows = ranked_rows(_study())
    front = {r["n_layer"] for r in rows if r["pareto"]}
    assert front == {1, 2}
    assert pareto_front([]) == set()


def test_best_row_is_the_lowest_loss():
    assert best_row(ranked_rows(_study()))["n_layer"] == 2
    assert best_row([]) is None


def test_write_outputs(tmp_path):
    rows = write_outputs(_study(), tmp_path, max_params=5000)
    assert [row for _, row in read_jsonl(tmp_path / "trials.jsonl")] == rows
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert ArchConfig.from_json(tmp_path / "best_arch.json").n_layer == 2
    assert rows_table(rows).row_count == 7


def test_outputs_of_a_study_without_results(tmp_path):
    study = optuna.create_study()
    study.add_trial(_trial(TrialState.PRUNED, 5, 9000, infeasible="too big"))
    write_outputs(study, tmp_path)
    assert (tmp_path / "pareto.png").is_file()
    assert not (tmp_path / "best_arch.json").exists()


def _mo_trial(state, number_tag, values=None, *, params, latency, curve=None, infeasible=None):
    sampled = {"n_layer": number_tag, "n_head": 2, "d_model": 32, "d_ff_ratio": 2, "context_length": 64,
               "dropout": 0.1}
    attrs = {"params": params, "latency_ms": latency, "flops": 2 * params,
             "arch": ArchConfig(n_layer=number_tag, n_head=2, d_model=32, d_ff=64, context_length=64, vocab_size=300,
                                name=f"l{number_tag}").to_dict()}
    if curve is not None:
        attrs["curve"] = curve
    if infeasible:
        attrs["infeasible"] = infeasible
    return create_trial(state=state, values=values, params=sampled, distributions=DISTRIBUTIONS, user_attrs=attrs)


def test_pareto_json_holds_exactly_the_non_dominated_complete_trials(tmp_path):
    objectives = ("loss", "params", "latency")
    study = optuna.create_study(directions=["minimize"] * 3)
    points = [  # (loss, params, latency)
        (3.0, 1000, 1.0),  # front: smallest and fastest
        (2.5, 2000, 2.0),  # front
        (2.5, 2000, 2.5),  # dominated by the one above (slower, same loss and size)
        (2.6, 3000, 0.5),  # front: the fastest
        (2.9, 2500, 2.0),  # dominated by (2.5, 2000, 2.0)
        (2.0, 8000, 9.0),  # front: the lowest loss
        (2.0, 8000, 9.0),  # front too: an equal point does not dominate
    ]
    for i, (loss, params, latency) in enumerate(points, start=1):
        study.add_trial(_mo_trial(TrialState.COMPLETE, i, [loss, params, latency], params=params, latency=latency))
    # a pruned trial whose last loss would beat everything, and an infeasible one: never on the front
    study.add_trial(_mo_trial(TrialState.PRUNED, 8, params=10, latency=0.1, curve=[1.5, 1.0]))
    study.add_trial(_mo_trial(TrialState.PRUNED, 8, params=10**9, latency=None, infeasible="too big"))
    rows = write_outputs(study, tmp_path, objectives=objectives)
    front = json.loads((tmp_path / "pareto.json").read_text())

    expected = {i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)}
    assert expected == {0, 1, 3, 5, 6}
    assert {entry["number"] for entry in front} == expected == {t.number for t in study.best_trials}
    for entry in front:
        assert entry["values"] == list(points[entry["number"]])
        assert entry["arch"]["n_layer"] == entry["number"] + 1 and entry["optimizer"] == "adamw"
    assert [e["values"][0] for e in front] == sorted(e["values"][0] for e in front)  # lowest loss first
    assert {r["trial"] for r in rows if r["pareto"]} == expected
    pruned = next(r for r in rows if r["trial"] == 7)
    assert (pruned["state"], pruned["val_loss"], pruned["evals"]) == ("pruned", 1.0, 2)
    assert (tmp_path / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert "loss, params, latency" in rows_table(rows, objectives=objectives).caption


def test_a_loss_only_front_is_over_loss_and_params(tmp_path):
    write_outputs(_study(), tmp_path)
    front = json.loads((tmp_path / "pareto.json").read_text())
    assert [(e["arch"]["n_layer"], e["values"]) for e in front] == [(2, [2.5, 2000]), (1, [3.0, 1000])]
    assert front_objectives(("loss",)) == ("loss", "params")
    assert front_objectives(("loss", "flops")) == ("loss", "flops")


def test_dominates():
    assert dominates([1, 2], [1, 3]) and not dominates([1, 3], [1, 3]) and not dominates([0, 4], [1, 3])


def test_the_cli_prints_the_table_full_width_when_stdout_is_not_a_terminal(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from codenas.cli import cli
    from codenas.search import study as study_module

    rows = ranked_rows(_study())
    for row in rows:  # wide cells: a long layout name and large numbers
        row.update(params=123_456_789_012, position="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, n_kv_head=1)
    monkeypatch.setattr(study_module, "run_search", lambda cfg: {
        "rows": rows, "counts": {"complete": 3}, "trials_run": 0, "infeasible_run": 0, "repeats_run": 0, "study": "s",
        "storage": "sqlite://", "best": None, "front": [], "corpus": "c"})
    result = CliRunner().invoke(cli, ["search", "--max-params", "5000", "--out", str(tmp_path)])  # not a terminal
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "trial" in line and "params" in line)
    assert all(h in header.split() for h in ("#", "trial", "state", "loss", "params", "ms/tok", "layout", "opt"))
    assert max(len(line) for line in lines) > 80
    assert "123,456,789,012" in result.output and "rope+rms+swiglu+qk+kv1" in result.output
    assert "…" not in result.output
