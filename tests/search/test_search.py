"""End-to-end tiny searches on CPU: outputs, resuming on the same storage, budgets, interruptions."""

from __future__ import annotations

import json
import math
import time

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from codenas.cli import cli
from codenas.io import CodenasError, read_jsonl
from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import load_tokenizer
from codenas.search import study as study_module
from codenas.search.report import dominates
from codenas.search.space import SearchSpace
from codenas.search.study import _dominating_trial, extrapolate, open_study, proxy_schedule, run_search
from codenas.settings import SearchSettings


@pytest.fixture
def pretrain_calls(monkeypatch):
    """Count (and optionally sabotage) the proxy training runs the search starts."""
    calls = {"n": 0, "interrupt_at": None}
    real = study_module.pretrain

    def counting_pretrain(**kwargs):
        calls["n"] += 1
        if calls["n"] == calls["interrupt_at"]:
            raise KeyboardInterrupt
        return real(**kwargs)

    monkeypatch.setattr(study_module, "pretrain", counting_pretrain)
    return calls


def _rows(out):
    return [row for _, row in read_jsonl(out / "trials.jsonl")]


def test_cli_search_writes_outputs_and_a_rerun_trains_nothing(tiny_config, tiny_tokenizer, tiny_corpus,
                                                            pretrain_calls):
    out = tiny_config().out
    args = ["--quiet", "search", "--max-params", "50000", "--trials", "3", "--budget-tokens", "256", "--out",
            str(out), "--tokenizer", str(tiny_tokenizer), "--corpus", str(tiny_corpus), "--batch-size", "2",
            "--evals", "2", "--eval-batches", "1", "--device", "cpu", "--n-layer", "1:2", "--n-head", "2",
            "--d-model", "16,32", "--d-ff-ratio", "2", "--context-length", "16,32", "--dropout", "0:0.1"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "3 trials run now" in first.output
    rows = _rows(out)
    assert len(rows) == 3 and {r["state"] for r in rows} <= {"complete", "pruned"}
    assert pretrain_calls["n"] == 3
    arch = ArchConfig.from_json(out / "best_arch.json")
    assert arch.vocab_size == load_tokenizer(tiny_tokenizer).get_vocab_size()
    best = rows[0]
    assert best["state"] == "complete" and best["pareto"]
    assert (arch.n_layer, arch.d_model, arch.context_length) == (best["n_layer"], best["d_model"],
                                                                 best["context_length"])
    assert GPT(arch).num_params() == best["params"] <= 50_000
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    pretrained = CliRunner().invoke(cli, [
        "--quiet", "train", "pretrain", "--arch", str(out / "best_arch.json"), "--tokenizer", str(tiny_tokenizer),
        "--corpus", str(tiny_corpus), "--out", str(out / "final"), "--max-steps", "2", "--batch-size", "2",
        "--eval-batches", "1", "--warmup-steps", "1", "--device", "cpu"])
    assert pretrained.exit_code == 0, pretrained.output
    assert (out / "final" / "checkpoint_last").is_dir()

    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "0 trials run now" in second.output
    assert pretrain_calls["n"] == 3
    assert _rows(out) == rows


def test_more_trials_resume_the_study(tiny_config, pretrain_calls):
    first = run_search(tiny_config(trials=2))
    assert first["trials_run"] == 2
    second = run_search(tiny_config(trials=3))
    assert second["trials_run"] == 1 and pretrain_calls["n"] == 3
    assert sorted(r["trial"] for r in second["rows"]) == [0, 1, 2]


def test_an_interrupted_search_continues(tiny_config, pretrain_calls):
    pretrain_calls["interrupt_at"] = 2
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_config(trials=3))
    result = run_search(tiny_config(trials=3))
    states = [r["state"] for r in result["rows"]]
    assert states.count("failed") == 1
    assert len(states) == 4 and result["trials_run"] == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_process_died_is_retried_with_the_same_shape(tiny_config, pretrain_calls, monkeypatch):
    monkeypatch.setattr(study_module, "GRACE_PERIOD_S", 1)
    tiny_config().out.mkdir()
    study = open_study(tiny_config())
    shape = {"n_layer": 2, "n_head": 2, "d_model": 16, "d_ff_ratio": 2, "context_length": 32, "dropout": 0.05}
    study.enqueue_trial(shape)
    zombie = study.ask()  # running, with a heartbeat that will never be renewed: its process "died"
    study._storage.record_heartbeat(zombie._trial_id)
    time.sleep(2.5)  # past the grace period (SQLite's clock has whole seconds)
    result = run_search(tiny_config(trials=1))
    assert result["trials_run"] == 1 and pretrain_calls["n"] == 1
    failed, retried = sorted(result["rows"], key=lambda r: r["trial"])
    assert (failed["state"], retried["state"]) == ("failed", "complete")
    assert retried["n_layer"] == 2 and retried["context_length"] == 32 and retried["dropout"] == 0.05


def test_infeasible_shapes_are_sampled_again_and_do_not_count(tiny_config, pretrain_calls):
    result = run_search(tiny_config(max_params=12_000, trials=4))
    rows = result["rows"]
    infeasible = [r for r in rows if r["state"] == "infeasible"]
    assert infeasible and all(r["params"] > 12_000 and "max 12,000" in r["reason"] for r in infeasible)
    trained = [r for r in rows if r["state"] != "infeasible"]
    assert len(trained) == 4 == pretrain_calls["n"] == result["trials_run"]
    assert result["infeasible_run"] == len(infeasible)
    assert all(r["d_model"] == 16 and r["params"] <= 12_000 for r in trained)
    again = run_search(tiny_config(max_params=12_000, trials=4))  # the study is complete: 4 trained shapes
    assert again["trials_run"] == 0 and pretrain_calls["n"] == 4


def test_a_search_that_finds_no_shape_that_fits_stops(tiny_config, pretrain_calls, monkeypatch):
    with pytest.raises(CodenasError, match="no shape of the search space fits max_latency_ms 1e-06"):
        run_search(tiny_config(out=tiny_config().out / "slow", max_latency_ms=1e-6, trials=2))
    # the smallest shape fits, but no shape the sampler proposes does: it gives up after a while
    monkeypatch.setattr(study_module, "MAX_INFEASIBLE_IN_A_ROW", 3)
    monkeypatch.setattr(study_module, "sample_arch", lambda *a, **k: (None, "never valid"))
    with pytest.raises(CodenasError, match="3 shapes in a row broke --max-params"):
        run_search(tiny_config(trials=2))
    rows = _rows(tiny_config().out)
    assert [r["state"] for r in rows] == ["infeasible"] * 3 and pretrain_calls["n"] == 0
    assert not (tiny_config().out / "best_arch.json").exists()


def test_an_impossible_parameter_budget_fails_fast(tiny_config, pretrain_calls):
    with pytest.raises(CodenasError, match="no shape of the search space fits max_params 1,000"):
        run_search(tiny_config(max_params=1000))
    assert pretrain_calls["n"] == 0


def test_same_seed_same_search(tiny_config):
    def without_latency(result):
        return [{k: v for k, v in row.items() if k != "latency_ms"} for row in result["rows"]]

    first = run_search(tiny_config(trials=3))
    again = run_search(tiny_config(trials=3, out=tiny_config().out / "again"))
    assert without_latency(again) == without_latency(first)
    other_seed = run_search(tiny_config(trials=3, out=tiny_config().out / "seed1", seed=1))
    assert [r["val_loss"] for r in other_seed["rows"]] != [r["val_loss"] for r in first["rows"]]


def test_a_study_refuses_other_settings(tiny_config):
    run_search(tiny_config(trials=0))
    with pytest.raises(CodenasError, match="budget_tokens: study has 256, now 512"):
        run_search(tiny_config(trials=0, budget_tokens=512))
    with pytest.raises(CodenasError, match="dtype: study has 'auto', now 'bf16'"):
        run_search(tiny_config(trials=0, dtype="bf16"))


def test_the_proxy_runs_train_at_the_search_dtype(tiny_config, monkeypatch):
    seen = []

    def pretrain(**kwargs):
        seen.append(kwargs["training"].dtype)
        return {"final_val_loss": 1.0}

    monkeypatch.setattr(study_module, "pretrain", pretrain)
    run_search(tiny_config(trials=2, dtype="fp32"))
    assert seen == ["fp32", "fp32"]


@pytest.mark.parametrize("storage, message", [
    ("mysql://user@127.0.0.1/db", "needs a database driver"),
    ("not a url", "cannot open storage"),
])
def test_unusable_storage_is_one_clear_error(tiny_config, storage, message):
    with pytest.raises(CodenasError, match=message):
        run_search(tiny_config(storage=storage, trials=0))


def test_proxy_schedule_spaces_evaluations_within_the_budget():
    assert proxy_schedule(10_000, 4, 64, 4) == (36, 9)  # 36 steps of 256 tokens <= 10,000
    assert proxy_schedule(10, 4, 64, 4) == (4, 1)  # never fewer than one step per evaluation


def test_trial_logs_are_kept_per_trial(tiny_config):
    result = run_search(tiny_config(trials=1))
    trial_dir = tiny_config().out / "trials" / "00000"
    settings = json.loads((trial_dir / "pretrain.json").read_text())
    assert settings["arch"]["n_layer"] == result["rows"][0]["n_layer"]
    assert any("val_loss" in row for _, row in read_jsonl(trial_dir / "metrics.jsonl"))
    assert not (trial_dir / "checkpoint_last").exists()


@pytest.mark.slow
def test_cli_trials_means_trained_shapes_under_a_tight_budget(tiny_tokenizer, tiny_corpus, tmp_path, monkeypatch,
                                                              pretrain_calls):
    """The default space (up to 8 layers of d_model 512) under 2M parameters: most shapes are too big, yet
    --trials 3 trains 3 of them."""
    monkeypatch.setenv("CODENAS_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "--quiet", "search", "--max-params", "2000000", "--trials", "3", "--budget-tokens", "1000", "--out",
        str(out), "--tokenizer", str(tiny_tokenizer), "--corpus", str(tiny_corpus), "--batch-size", "1",
        "--evals", "1", "--eval-batches", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    trained = [r for r in rows if r["state"] in ("complete", "pruned")]
    infeasible = [r for r in rows if r["state"] == "infeasible"]
    assert len(trained) == 3 == pretrain_calls["n"]
    assert all(r["params"] <= 2_000_000 for r in trained)
    assert infeasible and all(r["params"] > 2_000_000 for r in infeasible)
    assert f"3 trials run now ({len(infeasible)} infeasible shapes and 0 repeats" in result.output


def test_a_multi_objective_search_resumes_and_writes_its_front(tiny_config, pretrain_calls):
    objectives = ("loss", "params")
    first = run_search(tiny_config(objectives=objectives, trials=2))
    assert first["trials_run"] == 2
    second = run_search(tiny_config(objectives=objectives, trials=4))
    assert second["trials_run"] == 2 and pretrain_calls["n"] == 4
    assert sorted(r["trial"] for r in second["rows"] if r["state"] in ("complete", "pruned")) == [0, 1, 2, 3]
    complete = [(r["trial"], [r["val_loss"], r["params"]]) for r in second["rows"] if r["state"] == "complete"]
    expected = {n for n, v in complete if not any(dominates(other, v) for _, other in complete)}
    assert expected and {e["number"] for e in second["front"]} == expected
    assert all(e["values"] == dict(complete)[e["number"]] for e in second["front"])
    assert run_search(tiny_config(objectives=objectives, trials=4))["trials_run"] == 0
    with pytest.raises(CodenasError, match="has 2 objective"):
        run_search(tiny_config(trials=4))


def test_with_several_objectives_a_trial_dominated_at_an_evaluation_stops():
    study = optuna.create_study(directions=["minimize", "minimize"])
    for loss, params, curve in ((2.0, 100, [3.0, 2.0]), (1.5, 900, [2.5, 1.5])):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, values=[loss, params],
                                                  user_attrs={"params": params, "curve": curve}))
    trial = study.ask()
    objectives = ("loss", "params")
    assert _dominating_trial(trial, 0, [3.1, 200], objectives) == 0  # bigger and worse than trial 0 at eval 1
    assert _dominating_trial(trial, 0, [2.9, 200], objectives) is None  # better than 0, smaller than 1
    assert _dominating_trial(trial, 1, [2.9, 200], objectives) == 0  # trial 0 had 2.0 at eval 2
    assert _dominating_trial(trial, 2, [9.9, 999], objectives) is None  # nobody reached eval 3


def test_extrapolate_extends_the_line_through_two_points_in_log_tokens():
    assert extrapolate(3.0, 10, 2.0, 20, 40) == pytest.approx(1.0)
    assert extrapolate(3.0, 10, 2.0, 20, 160) == pytest.approx(-1.0)
    with pytest.raises(CodenasError, match="extrapolate_to .* must be above budget_tokens"):
        SearchSettings(max_params=1, budget_tokens=100, extrapolate_to=100)


def test_extrapolated_trials_train_a_half_run_and_score_the_extended_curve(tiny_config, monkeypatch):
    runs = []

    def pretrain(**kwargs):  # a learning curve linear in log2(tokens), the same for every shape
        training = kwargs["training"]
        tokens = training.max_steps * training.batch_size * kwargs["arch"].context_length
        runs.append((kwargs["out"].name, tokens))
        return {"final_val_loss": 6.0 - 0.5 * math.log2(tokens), "tokens": tokens}

    monkeypatch.setattr(study_module, "pretrain", pretrain)
    result = run_search(tiny_config(trials=2, extrapolate_to=2048))
    assert [name for name, _ in runs][::2] == ["half", "half"]
    assert all(half * 2 == full for (_, half), (_, full) in zip(runs[::2], runs[1::2], strict=True))
    for row in result["rows"]:
        assert row["state"] == "complete"
        assert row["proxy_val_loss"] == pytest.approx(6.0 - 0.5 * 8)  # 256 tokens
        assert row["val_loss"] == pytest.approx(6.0 - 0.5 * 11)  # the line at 2,048 tokens


def test_an_extrapolated_trial_keeps_both_runs_logs(tiny_config):
    result = run_search(tiny_config(trials=1, extrapolate_to=2048))
    trial_dir = tiny_config().out / "trials" / "00000"
    assert (trial_dir / "half" / "metrics.jsonl").is_file() and (trial_dir / "metrics.jsonl").is_file()
    row = result["rows"][0]
    assert row["state"] == "complete" and row["proxy_val_loss"] is not None and row["val_loss"] != row["proxy_val_loss"]
    with pytest.raises(CodenasError, match="extrapolate_to: study has 2048, now 0"):
        run_search(tiny_config(trials=1))


def test_a_shape_proposed_again_is_not_trained_again_and_does_not_count(tiny_config, pretrain_calls, monkeypatch):
    monkeypatch.setattr(study_module, "MAX_INFEASIBLE_IN_A_ROW", 15)
    one_shape = SearchSpace(n_layer=(1, 1), n_head=(2,), d_model=(16,), d_ff_ratio=(2,), context_length=(16,),
                            norm=("rmsnorm",), qk_norm=(True,), n_kv_head=(2,), optimizer=("adamw",))
    result = run_search(tiny_config(trials=3, space=one_shape))  # ends, without an error, once nothing new comes
    assert pretrain_calls["n"] == 1 and result["trials_run"] == 1 and result["repeats_run"] == 15
    states = [row["state"] for row in result["rows"]]
    assert states == ["complete"] + ["repeat"] * 15
    assert {row["reason"] for row in result["rows"][1:]} == {"same shape as trial 0"}
    assert len(result["front"]) == 1
