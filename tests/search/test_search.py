"""End-to-end tiny searches on CPU: outputs, resuming on the same storage, budgets, interruptions."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from codenas.cli import cli
from codenas.io import CodenasError, read_jsonl
from codenas.model.config import ArchConfig
from codenas.model.model import GPT
from codenas.model.tokenizer import load_tokenizer
from codenas.search import study as study_module
from codenas.search.study import open_study, proxy_schedule, run_search


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


def test_budgets_make_trials_infeasible_without_training(tiny_config, pretrain_calls):
    result = run_search(tiny_config(max_params=12_000, trials=4))
    rows = result["rows"]
    infeasible = [r for r in rows if r["state"] == "infeasible"]
    assert infeasible and all(r["params"] > 12_000 and "max 12,000" in r["reason"] for r in infeasible)
    assert all(r["d_model"] == 16 for r in rows if r["state"] != "infeasible")
    assert pretrain_calls["n"] == len(rows) - len(infeasible)

    slow = run_search(tiny_config(out=tiny_config().out / "slow", max_latency_ms=1e-6, trials=2))
    assert [r["state"] for r in slow["rows"]] == ["infeasible", "infeasible"]
    assert all(r["latency_ms"] > 1e-6 and "ms/token" in r["reason"] for r in slow["rows"])
    assert pretrain_calls["n"] == len(rows) - len(infeasible)
    assert slow["best"] is None and not (tiny_config().out / "slow" / "best_arch.json").exists()


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
