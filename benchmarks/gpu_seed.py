"""The seed experiment on one GPU within a wall-time budget, as one command; ``--smoke`` runs the same steps tiny.

Four steps, in order (docs/gpu.md says how to carry them to an offline GPU machine as a bundle). ``--out`` gets at
most 8 plain files and no folders; the seed run's stages and checkpoints go to ``--work``:

1. ``environment.json``: torch / CUDA versions, device name and count, bf16 support, the measured bf16 matmul
   TFLOP/s (a square matmul timed after warm-up), the table's peak for the device (``codenas.train.mfu``), how
   fast the pretraining batch source draws batches (tokens/s; it must stay well above what the GPU trains), and
   where codenas was imported from.
2. ``throughput.json``: training throughput and MFU (6·N·tokens/s over the peak) at the seed shape for the GPT-2
   layout (``codenas_l8h512_regularized``) and, where its config exists, the modern layout
   (``codenas_l8h512_modern``): bf16 autocast, the loop's own optimizer (fused AdamW on CUDA) and loss, eager and
   ``torch.compile``. Batch sizes 32, 64, 128, 256 are probed (2 s each, eager) until one does not fit or stops
   paying (<5% more tokens/s); the best is then measured for ``--bench-seconds`` (8) in both modes.
3. ``seed.json``: ``codenas run --preset seed`` in a child process with overrides that fit the remaining budget
   (``plan.json`` lists each override and why, and the seconds allowed and spent per part): pretraining steps
   from the throughput measured in step 2, LoRA with the seed's settings for one 2,000-step evaluation interval,
   evaluation of the base and the LoRA model on ``mini`` and ``mbpp-test`` with 20 samples per problem at
   temperature 0.8 (pass@1, pass@10), the report. The table: val loss after pretraining, pretraining tokens/s
   and MFU as the loop logged them, pass@k of each model on each benchmark, wall time per stage. Past its
   allowance the run is interrupted, so that step 4 still runs.
4. ``sampling.json``: codenas' batched sampler against transformers' ``generate`` on the pretrained model, in
   tokens/s, with the evaluation's settings and the judge's stop strings, n = 1 and n = 20, over each evaluated
   benchmark; the sampler also with its compiled decode step where CUDA is (skipped, and said so, on a CPU).

``summary.json`` gathers everything and is rewritten after each step (and every ~15 s of the seed run), so a run
cut short still returns what it measured; ``report.html`` shows the figures with the seed run's own report (plots
inlined); ``run.log`` has everything printed. The last printed line is ``seed_wall_s: X``.

    bash gpu_bundle/run.sh --out $OUT                            # on the GPU machine, from the bundle (9 minutes)
    python benchmarks/gpu_seed.py --smoke --out /tmp/smoke      # the same steps, tiny, on a CPU (a few minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

GPT2_LAYOUT = "codenas_l8h512_regularized"
MODERN_LAYOUT = "codenas_l8h512_modern"
SEED_BATCH = 32  # the seed preset's pretraining batch (sequences of 512 tokens)
SAMPLING_NS = (1, 20)  # samples per prompt in the sampling step: pass@1 alone, and the evaluation's 20
GPU_BUDGET_S = 540.0  # the whole run on the GPU machine, the bundle's install included
SMOKE_BUDGET_S = 3600.0  # --smoke on a small shared CPU: the same plan, scaled, never binding in practice
# Seconds each part may take at the GPU budget (estimates for one H200 with 16 cores; no GPU figure has been taken
# yet); pretraining gets the rest. Steps 2 and 4 stop measuring past theirs; the seed run is interrupted past its
# end (everything up to the sampling step's allowance).
ALLOWANCE_S = {"install": 20, "environment": 15, "throughput": 100, "data+tokenizer": 45, "corpus": 45, "lora": 60,
               "eval": 75, "report": 5, "sampling": 60, "margin": 15}
AFTER_STEP_2 = ("data+tokenizer", "corpus", "lora", "eval", "report", "sampling", "margin")  # besides pretraining


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What differs between the real run and ``--smoke``."""

    layouts: tuple[str, ...]
    shrink: dict | None  # arch fields replaced in every layout (the smoke run's tiny shapes)
    seq_len: int | None  # None: the arch's context_length
    batch_sizes: tuple[int, ...]  # probed in order; the seed's batch first
    probe_seconds: float
    matmul_n: int
    compile_backend: str  # torch.compile's backend in step 2
    run_overrides: tuple[str, ...]  # fixed overrides of the seed preset (the budgeted ones are added)


GPU = Sizes(layouts=(GPT2_LAYOUT, MODERN_LAYOUT), shrink=None, seq_len=None, batch_sizes=(32, 64, 128, 256),
            probe_seconds=2.0, matmul_n=8192, compile_backend="inductor", run_overrides=())
SMOKE = Sizes(
    layouts=(GPT2_LAYOUT, MODERN_LAYOUT), shrink={"n_layer": 2, "n_head": 4, "d_model": 128, "vocab_size": 512},
    seq_len=64, batch_sizes=(2, 4), probe_seconds=0.3, matmul_n=256,
    # inductor's C++ code generation for a CPU takes minutes on 2 cores; aot_eager still traces forward and
    # backward through dynamo and AOTAutograd, so graph breaks and tracing errors show up in the smoke run
    compile_backend="aot_eager",
    run_overrides=(
        "tokenizer.vocab_size=512",
        "corpus.max_files=20", "corpus.val_fraction=0.2", "corpus.tasks=2",
        "pretrain.arch=\"tiny\"", "pretrain.batch_size=4", "pretrain.eval_batches=1",
        "pretrain.warmup_steps=1", "pretrain.log_interval=1",
        "finetune.batch_size=4", "finetune.eval_problems=1",
        "eval.limit=2", "eval.max_new_tokens=16", "improve.rounds=0",
    ),
)


_LOG_FILE = None  # --log: everything printed also goes here


def log(message: str) -> None:
    print(message, flush=True)
    if _LOG_FILE is not None:
        _LOG_FILE.write(message + "\n")
        _LOG_FILE.flush()


def write_json(path: Path, data: dict) -> None:
    from codenas.io import atomic_write_json

    atomic_write_json(path, data)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --- 1. environment --------------------------------------------------------------------------------------------


def matmul_tflops(device, n: int, seconds: float = 1.0) -> float:
    """bf16 TFLOP/s of an ``n x n @ n x n`` matmul, timed for about ``seconds`` after warm-up."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        reps += 10
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def data_loading_tokens_per_s(device, batch_size: int, context_length: int, seconds: float = 1.0) -> float:
    """Tokens/s the pretraining batch source delivers to ``device`` (random windows of a memory-mapped uint16
    token file, pinned and copied as the training loop does), with no model in the way."""
    import tempfile

    import numpy as np

    from codenas.train.corpus import RandomWindows
    from codenas.train.loop import _Prefetcher

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.bin"
        np.random.default_rng(0).integers(0, 8192, 8_000_000, dtype=np.uint16).tofile(path)
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
        batches = _Prefetcher(RandomWindows(tokens, batch_size, context_length, seed=0), device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            batches.prefetch()
            n += batches.next_batch()["input_ids"].numel()
        sync(device)
        rate = n / (time.perf_counter() - start)
        del tokens
    return rate


def environment(device, sizes: Sizes, peak_override: float | None) -> dict:
    import torch

    import codenas
    from codenas.train.loop import has_fast_bf16
    from codenas.train.mfu import device_peak_flops

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "codenas": str(Path(codenas.__file__).parent), "torch_path": str(Path(torch.__file__).parent),
        "device": str(device), "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "bf16_native": has_fast_bf16(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_count=torch.cuda.device_count(),
                   memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    else:
        env.update(device_name=platform.processor() or platform.machine(), bf16_supported=env["bf16_native"])
    env["peak_bf16_flops"] = device_peak_flops(device, peak_override)
    env["peak_source"] = "--peak-flops" if peak_override else ("table" if env["peak_bf16_flops"] else None)
    env["matmul_n"] = sizes.matmul_n
    env["matmul_bf16_tflops"] = matmul_tflops(device, sizes.matmul_n)
    env["data_loading_tokens_per_s"] = data_loading_tokens_per_s(device, SEED_BATCH, 512)
    return env


# --- 2. training throughput and MFU ----------------------------------------------------------------------------


def _is_oom(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure_training(arch, batch_size: int, seq_len: int, *, compile_model: bool, seconds: float, device,
                     peak: float | None, backend: str = "inductor") -> dict:
    """Tokens/s (and MFU) of forward + backward + optimizer step of a fresh model at this shape, for ``seconds``
    after untimed warm-up steps (which include compilation). Uses the training loop's optimizer, autocast and loss."""
    import torch

    from codenas.model.model import GPT, parameter_counts
    from codenas.settings import TrainSettings
    from codenas.train.loop import autocast_dtype, lm_loss, make_optimizer
    from codenas.train.mfu import mfu

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(arch).to(device).train()
    n_params = parameter_counts(model)[1]
    optimizer = make_optimizer(model, TrainSettings(), device)
    step_model = torch.compile(model, backend=backend) if compile_model else model
    amp = autocast_dtype("bf16", device)
    x = torch.randint(0, arch.vocab_size, (batch_size, seq_len + 1), device=device)
    batch = {"input_ids": x[:, :-1], "targets": x[:, 1:]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp):
            loss = lm_loss(step_model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(3):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        if steps % 5 == 0 or device.type != "cuda":
            sync(device)
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * batch_size * seq_len / elapsed
    result = {"batch_size": batch_size, "seq_len": seq_len, "compile": compile_model, "params": n_params,
              "steps": steps, "seconds": round(elapsed, 2), "warmup_s": round(warmup_s, 2),
              "tokens_per_s": tokens_per_s, "mfu": mfu(n_params, tokens_per_s, peak) if peak else None}
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def throughput(device, sizes: Sizes, seconds: float, peak: float | None, deadline: float = math.inf) -> dict:
    """Step 2 for every layout; past ``deadline`` (a ``time.perf_counter()`` value) what is left is skipped."""
    import torch

    from codenas.model.config import ArchConfig, load_arch
    from codenas.paths import resolve_config

    layouts = {}
    for name in sizes.layouts:
        if layouts and time.perf_counter() > deadline:
            log(f"  {name}: skipped, the step's time allowance is spent")
            layouts[name] = {"skipped": "the throughput step's time allowance was spent"}
            continue
        try:
            resolve_config(name, ".json")
        except Exception:  # noqa: BLE001 - a layout this checkout does not have yet is reported, not fatal
            log(f"  {name}: no such arch config on this checkout, skipped")
            layouts[name] = {"skipped": "no arch config of this name on this checkout"}
            continue
        arch = load_arch(name)
        if sizes.shrink:
            fields = {**arch.to_dict(), **sizes.shrink, "d_ff": 4 * sizes.shrink["d_model"]}
            if "n_kv_head" in fields:
                fields["n_kv_head"] = sizes.shrink["n_head"] // (arch.n_head // arch.n_kv_head)
            arch = ArchConfig.from_dict(fields)
        seq_len = sizes.seq_len or arch.context_length
        if sizes.seq_len:
            arch = dataclasses.replace(arch, context_length=max(arch.context_length, seq_len))
        probes, best = [], None
        for batch_size in sizes.batch_sizes:  # eager probes: the batch size that fits and pays best
            try:
                r = measure_training(arch, batch_size, seq_len, compile_model=False, seconds=sizes.probe_seconds,
                                     device=device, peak=peak)
            except (RuntimeError, torch.OutOfMemoryError) as e:
                if not _is_oom(e):
                    raise
                probes.append({"batch_size": batch_size, "oom": True})
                log(f"  {name} batch {batch_size}: out of memory")
                break
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            probes.append(r)
            log(f"  {name} probe batch {batch_size}: {r['tokens_per_s']:,.0f} tokens/s")
            if best is not None and r["tokens_per_s"] < 1.05 * best["tokens_per_s"]:
                if r["tokens_per_s"] > best["tokens_per_s"]:
                    best = r
                break
            best = r
        runs = {}
        for compiled in (False, True):
            if compiled and time.perf_counter() > deadline:
                log(f"  {name} compile: skipped, the step's time allowance is spent")
                continue
            r = measure_training(arch, best["batch_size"], seq_len, compile_model=compiled, seconds=seconds,
                                 device=device, peak=peak, backend=sizes.compile_backend)
            r["compile_backend"] = sizes.compile_backend if compiled else None
            runs["compile" if compiled else "eager"] = r
            mfu_text = f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else ""
            log(f"  {name} batch {r['batch_size']} {'compile' if compiled else 'eager'}: "
                f"{r['tokens_per_s']:,.0f} tokens/s{mfu_text} (warm-up {r['warmup_s']:.1f} s)")
        seed_batch = next((p for p in probes if p.get("batch_size") == sizes.batch_sizes[0] and "oom" not in p), None)
        layouts[name] = {"arch": arch.to_dict(), "probes": probes, "best_batch_size": best["batch_size"], **runs,
                         **({} if "compile" in runs else {"compile_skipped": "time allowance spent"}),
                         "best": max(runs.values(), key=lambda r: r["tokens_per_s"]), "seed_batch_probe": seed_batch}
    return {"bench_seconds": seconds, "peak_flops": peak, "layouts": layouts}


# --- the plan: seconds allowed per part of the run -------------------------------------------------------------


def allowances(budget_s: float) -> dict[str, float]:
    """Seconds each part of the run may take at this budget (``ALLOWANCE_S`` scaled to it); pretraining gets the
    rest, decided once steps 1-2 have measured the device."""
    scale = budget_s / GPU_BUDGET_S
    return {part: round(seconds * scale, 1) for part, seconds in ALLOWANCE_S.items()}


def plan_overrides(sizes: Sizes, smoke: bool, remaining_s: float, measured: dict, user: list[str],
                   allowed: dict[str, float]) -> tuple[list[dict], float]:
    """Overrides of the seed preset that fit ``remaining_s``, each with its reason; and pretraining's seconds."""
    gpt2 = measured["layouts"].get(sizes.layouts[0], {})
    plan = [{"override": o, "why": "smoke: tiny sizes so that every step runs on a CPU in seconds"}
            for o in sizes.run_overrides]
    # what is left after the other stages' allowances: data build and tokenizer, the corpus stage capped at 4,000
    # files (all of stdlib + site-packages: ~3 min on 16 cores, estimated from benchmarks/corpus_build.py on 2
    # cores), LoRA (one 2,000-step evaluation interval), four evaluations (mini and 50 mbpp-test problems, 20
    # samples each), the report, then the sampling step and a margin
    pretrain_s = max(30.0, remaining_s - sum(allowed[p] for p in AFTER_STEP_2))
    if smoke:
        plan += [{"override": "pretrain.max_steps=4", "why": "smoke"},
                 {"override": "pretrain.eval_interval=2", "why": "smoke: an evaluation and checkpoint mid-run"},
                 {"override": "finetune.max_steps=2", "why": "smoke"},
                 {"override": "finetune.eval_interval=2", "why": "smoke: one LoRA evaluation"},
                 {"override": "eval.samples=10", "why": "smoke: pass@10 needs 10 samples"}]
    else:
        # compile when the time it saves over the pretraining run exceeds its compilation time (as in step 2)
        eager, compiled = gpt2.get("eager", {}), gpt2.get("compile", {})
        speedup = compiled.get("tokens_per_s", 0) / eager.get("tokens_per_s", math.inf)
        compile_cost = compiled.get("warmup_s", 0) - eager.get("warmup_s", 0)
        compile_wins = speedup > 1.05 and pretrain_s * (1 - 1 / speedup) > compile_cost
        plan.append({"override": f"pretrain.compile={'true' if compile_wins else 'false'}",
                     "why": f"torch.compile ran {speedup:.2f}x eager in step 2 and took {compile_cost:.0f} s "
                            f"to compile: {'worth' if compile_wins else 'not worth'} it for {pretrain_s:.0f} s"})
        train_s = pretrain_s - compile_cost if compile_wins else pretrain_s
        if not compile_wins:
            speedup = 1.0
        probe = gpt2.get("seed_batch_probe") or gpt2.get("best") or {}
        tokens_per_s = probe.get("tokens_per_s", 0) * speedup * 0.9  # the loop also evaluates and checkpoints
        steps = int(min(20000, max(200, train_s * tokens_per_s / (SEED_BATCH * 512))))
        plan.append({"override": f"pretrain.max_steps={steps}",
                     "why": f"{train_s:.0f} s of pretraining at the ~{tokens_per_s:,.0f} tokens/s measured at "
                            f"batch {SEED_BATCH} in step 2 (the preset's 20,000 steps do not fit)"})
        plan.append({"override": f"pretrain.eval_interval={max(100, steps // 4)}",
                     "why": "four evaluations and checkpoints in the shortened run"})
        plan.append({"override": "improve.rounds=0",
                     "why": "expert iteration (the seed preset's 3 rounds of 2,000 LoRA steps) does not fit"})
        plan.insert(0, {"override": "corpus.max_files=4000",
                        "why": "a deterministic sample of 4,000 stdlib + site-packages files: building all of them "
                               "(filter, dedup, decontaminate, tokenize) is estimated at ~3 min on 16 cores"})
        plan.append({"override": "finetune.max_steps=2000",
                     "why": "one of the seed's 2,000-step evaluation intervals (its 20,000 steps take ~10x longer)"})
        plan.append({"override": "eval.limit=50",
                     "why": "mbpp-test's first 50 of 500 problems (all 20 of mini): 20 samples x 520 problems x "
                            "2 models do not fit in the budget"})
        plan.append({"override": "eval.max_new_tokens=192", "why": "completions of a 30 M model that do not "
                     "stop by 192 tokens rarely pass; this halves the slowest samples' cost"})
    plan += [{"override": o, "why": "peak FLOP/s for the logged MFU" if "peak_flops" in o else "given on the command "
              "line"} for o in user]
    return plan, pretrain_s


# --- 3. the seed experiment --------------------------------------------------------------------------------------


def run_seed(run_dir: Path, plan: list[dict], mbpp: str | None, deadline: float, refresh=None) -> dict:
    """``codenas run --preset seed`` with the plan's overrides in a child process, its output logged. Past
    ``deadline`` (``time.perf_counter()``) it is interrupted (as Ctrl-C does; killed 15 s later), so that the steps
    after it still run; ``refresh()`` is called every ~15 s while it runs (to rewrite summary.json)."""
    cmd = [sys.executable, "-m", "codenas.cli", "run", "--preset", "seed", "--out", str(run_dir)]
    if mbpp:
        cmd += ["--mbpp", mbpp]
    cmd += [p["override"] for p in plan]
    log("  $ " + " ".join(cmd))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its lines reach run.log as they come
    stopped = []

    def stop() -> None:
        stopped.append(time.perf_counter() - start)
        log(f"  the seed run passed its allowance ({stopped[0]:.0f} s): interrupted")
        _signal_group(proc, signal.SIGINT)
        time.sleep(15)
        _signal_group(proc, signal.SIGKILL)

    timer = threading.Timer(max(0.0, deadline - time.perf_counter()), stop)
    timer.daemon = True
    timer.start()
    last = time.perf_counter()
    try:
        for line in proc.stdout:
            log("    " + line.rstrip("\n"))
            if refresh and time.perf_counter() - last > 15:
                last = time.perf_counter()
                refresh()
        rc = proc.wait()
    finally:
        timer.cancel()
    return {"command": cmd, "returncode": rc, "wall_s": time.perf_counter() - start,
            "interrupted_after_s": stopped[0] if stopped else None}


def seed_run_parts(stages: dict[str, float | None]) -> dict[str, float]:
    """The seed run's stage wall times summed into the plan's parts (``eval/base/mini`` -> ``eval``, ...)."""
    part_of = {"data": "data+tokenizer", "tokenizer": "data+tokenizer", "sft": "lora"}
    parts: dict[str, float] = {}
    for name, wall in stages.items():
        part = part_of.get(name, name.split("/")[0])
        parts[part] = round(parts.get(part, 0) + (wall or 0), 1)
    return parts


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def seed_table(run_dir: Path) -> dict:
    """The experiment's figures, read from the run folder's own outputs."""
    from codenas.io import read_json, read_jsonl
    from codenas.run.cache import read_stages

    stages = run_dir / "stages.json"
    table: dict = {"stages": {name: s.get("wall_s") for name, s in read_stages(stages).items()}
                   if stages.is_file() else {}}
    result = run_dir / "pretrain" / "result.json"
    if result.is_file():
        r = read_json(result)
        table["pretrain"] = {k: r.get(k) for k in ("best_val_loss", "final_val_loss", "tokens", "steps", "params")}
        rows = [row for _, row in read_jsonl(run_dir / "pretrain" / "metrics.jsonl", allow_torn_tail=True)
                if "tokens_per_s" in row]
        if rows:
            table["pretrain"]["logged_tokens_per_s"] = max(r["tokens_per_s"] for r in rows[1:] or rows)
            mfus = [r["mfu"] for r in rows[1:] or rows if "mfu" in r]
            table["pretrain"]["logged_mfu"] = max(mfus) if mfus else None
    table["eval"] = {}
    for summary in sorted(run_dir.glob("eval/*/*/summary.json")):
        s = read_json(summary)
        table["eval"].setdefault(summary.parent.parent.name, {})[summary.parent.name] = {
            "problems": s.get("n_problems"), "samples": s.get("n_samples"), **s.get("pass_at_k", {})}
    return table


# --- 4. sampling throughput --------------------------------------------------------------------------------------


def sampling(run_dir: Path, overrides: list[str], device, deadline: float, hf_dir: Path) -> dict:
    """Tokens/s of codenas' batched sampler and of transformers' ``generate`` on the pretrained model, with the
    evaluation's settings and the judge's stop strings, n = 1 and n = 20, over each evaluated benchmark (its first
    ``eval.limit`` problems); the sampler also with its compiled decode step where CUDA is. Settings whose time
    would pass ``deadline`` are skipped and say so."""
    import torch
    from sampling_throughput import run_codenas, run_hf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from codenas.data.benchmarks import load_problems
    from codenas.eval.postprocess import STOP_SEQUENCES
    from codenas.model.export_hf import export_hf
    from codenas.model.loading import load_model
    from codenas.model.tokenizer import encode_texts
    from codenas.run.config import load_run_config
    from codenas.run.stages import best_model

    hf_logging.set_verbosity_error()
    ev = load_run_config("seed", overrides=overrides)["eval"]
    checkpoint = best_model(run_dir / "pretrain")
    loaded = load_model(str(checkpoint), device=device)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    export_hf(checkpoint, hf_dir, overwrite=True)
    dtype = next(model.parameters()).dtype
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True, dtype=dtype).to(device).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True, padding_side="left")
    context, max_new = model.config.context_length, ev["max_new_tokens"]
    compiled = device.type == "cuda"
    result: dict = {"checkpoint": str(checkpoint), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
                    "settings": {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": max_new,
                                 "stop": list(STOP_SEQUENCES), "ns": list(SAMPLING_NS)},
                    "tokens_counted": "the tokens of each answer up to its stop string (the same count for both)",
                    "compile": "measured (torch.compile of the decode step, CUDA graphs; first_call_s includes "
                               "compilation)" if compiled else f"skipped: the compiled decode step is CUDA only "
                               f"(this run is on {device.type})", "rows": [], "skipped": []}
    workloads = []
    for bench in ev["benchmarks"]:
        try:
            problems = load_problems(bench, run_dir / "data")[: ev["limit"] or None]
        except Exception as e:  # noqa: BLE001 - mbpp-test without an MBPP file: reported, the others measured
            result["skipped"].append(f"{bench}: {e}")
            continue
        prompts = [p.prompt for p in problems]
        fits = [p for p, ids in zip(prompts, encode_texts(tokenizer, prompts), strict=True)
                if len(ids) + max_new <= context]
        workloads += [(bench, len(problems), fits, n) for n in SAMPLING_NS]
    if not workloads:
        return result
    warm = workloads[0][2][:2]  # first calls pay one-off costs (kernels, allocator): not timed
    run_codenas(model, tokenizer, warm, n=1, max_new=4, forced=True, max_batch_size=None)
    run_hf(hf_model, hf_tokenizer, tokenizer, warm, n=1, max_new=4, forced=True)
    methods = [("codenas", False), ("hf_generate", None)] + ([("codenas_compiled", True)] if compiled else [])
    last_s: dict[str, float] = {}
    for method, compile_step in methods:
        for bench, n_problems, prompts, n in workloads:
            left = deadline - time.perf_counter()
            if left < 2 * last_s.get(method, 0) + 1:
                result["skipped"].append(f"{method} {bench} n={n}: the step's time allowance is spent")
                log(f"  {method} {bench} n={n}: skipped, the step's time allowance is spent")
                continue
            row = {"benchmark": bench, "problems": n_problems, "prompts": len(prompts), "n": n, "method": method}
            if method == "hf_generate":
                tokens, seconds = run_hf(hf_model, hf_tokenizer, tokenizer, prompts, n=n, max_new=max_new,
                                         forced=False)
            else:
                kwargs = dict(n=n, max_new=max_new, forced=False, max_batch_size=None, compile=compile_step)
                if compile_step:
                    row["first_call_s"] = round(run_codenas(model, tokenizer, prompts, **kwargs)[1], 2)
                tokens, seconds = run_codenas(model, tokenizer, prompts, **kwargs)
            last_s[method] = seconds + row.get("first_call_s", 0)
            row.update(tokens=tokens, seconds=round(seconds, 3), tokens_per_s=tokens / seconds)
            result["rows"].append(row)
            log(f"  {method:16s} {bench:9s} n={n:<3} {row['tokens_per_s']:10,.0f} tokens/s "
                f"({tokens} tokens, {seconds:.1f} s)")
    by = {(r["benchmark"], r["n"], r["method"]): r["tokens_per_s"] for r in result["rows"]}
    result["speedup_vs_hf_generate"] = {
        f"{method} {bench} n={n}": by[(bench, n, method)] / by[(bench, n, "hf_generate")]
        for bench, n, method in by if method != "hf_generate" and (bench, n, "hf_generate") in by}
    del hf_model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# --- report.html ---------------------------------------------------------------------------------------------------


def write_report(out: Path, summary: dict, run_dir: Path, work: Path) -> None:
    """``out/report.html``: this run's figures (the plan, throughput, the seed table, sampling, a plot of sampling
    tokens/s), then the seed run's own report (its plots inlined), all in one file."""
    from codenas.run.report import render_html

    env, plan = summary.get("environment") or {}, summary.get("plan") or {}
    facts = (f"device **{env.get('device_name', '?')}** ({env.get('device', '?')}), torch {env.get('torch', '?')}, "
             f"Python {env.get('python', '?')}; budget {summary['budget_s']:.0f} s, wall "
             f"{summary.get('total_wall_s', 0):.0f} s (the bundle's install included)")
    blocks: list = [("h1", "GPU seed run"), ("p", facts + ("; **smoke run**" if summary.get("smoke") else ""))]
    if summary.get("errors"):
        blocks.append(("p", "**errors**: " + "; ".join(f"{k}: {v}" for k, v in summary["errors"].items())))
    if plan.get("allowance_s"):
        blocks += [("h2", "Plan: seconds allowed and spent"),
                   ("table", ["part", "allowed s", "spent s"],
                    [[part, _fmt(plan["allowance_s"].get(part), ".0f"), _fmt(plan["spent_s"].get(part), ".1f")]
                     for part in dict.fromkeys([*plan["allowance_s"], *plan["spent_s"]])])]
    rows = []
    for name, layout in (summary.get("throughput") or {}).get("layouts", {}).items():
        for mode in ("eager", "compile"):
            if mode in layout:
                r = layout[mode]
                rows.append([name, mode, str(r["batch_size"]), _fmt(r["tokens_per_s"], ",.0f"), _fmt(r["mfu"], ".1%"),
                             _fmt(r.get("peak_memory_gib"), ".1f")])
    if rows:
        blocks += [("h2", "Training throughput"),
                   ("table", ["layout", "mode", "batch", "tokens/s", "MFU", "peak GiB"], rows)]
    seed = summary.get("seed") or {}
    if seed.get("pretrain") or seed.get("eval"):
        pre = seed.get("pretrain", {})
        blocks += [("h2", "Seed experiment"),
                   ("p", f"pretraining: {pre.get('steps')} steps, best val loss "
                         f"{_fmt(pre.get('best_val_loss'), '.3f')}, "
                         f"{_fmt(pre.get('logged_tokens_per_s'), ',.0f')} tokens/s, MFU "
                         f"{_fmt(pre.get('logged_mfu'), '.1%')}"),
                   ("table", ["model", "benchmark", "problems", "samples", "pass@1", "pass@10"],
                    [[m, b, str(r["problems"]), str(r["samples"]), _fmt(r.get("pass@1"), ".1%"),
                      _fmt(r.get("pass@10"), ".1%")] for m, rows_ in seed["eval"].items() for b, r in rows_.items()])]
    samp = summary.get("sampling") or {}
    if samp.get("rows"):
        blocks += [("h2", "Sampling throughput"),
                   ("p", f"Compiled decode step: {samp['compile']}. Tokens counted: {samp['tokens_counted']}."),
                   ("table", ["benchmark", "n", "method", "tokens", "s", "tokens/s", "first call s"],
                    [[r["benchmark"], str(r["n"]), r["method"], str(r["tokens"]), _fmt(r["seconds"], ".2f"),
                      _fmt(r["tokens_per_s"], ",.0f"), _fmt(r.get("first_call_s"), ".1f")] for r in samp["rows"]]),
                   ("img", _sampling_plot(samp["rows"], work / "sampling.png"), "sampling tokens/s")]
    page = render_html(blocks, title="GPU seed run")
    run_report = run_dir / "report.html"
    if run_report.is_file():  # the seed run's own report follows, in the same page
        body = run_report.read_text(encoding="utf-8")
        body = body[body.index("<body>") + len("<body>"):body.rindex("</body>")]
        page = page.replace("\n</body>", "\n<hr>" + body + "</body>")
    _write_text(out / "report.html", page)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _sampling_plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys(f"{r['benchmark']} n={r['n']}" for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 2), 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        rate = {f"{r['benchmark']} n={r['n']}": r["tokens_per_s"] for r in rows if r["method"] == method}
        xs = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [rate.get(g, 0) for g in groups], width, label=method)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("tokens/s")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _write_text(path: Path, text: str) -> None:
    from codenas.io import atomic_write_text

    atomic_write_text(path, text)


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the results: at most 8 plain files (created; files in it "
                   "are replaced)")
    p.add_argument("--work", default=None, help="folder for the seed run's stages and checkpoints (default: "
                   "OUT.work beside OUT)")
    p.add_argument("--log", default=None, help="file that gets everything printed (default: OUT/run.log; - for none)")
    p.add_argument("--smoke", action="store_true", help="the same steps with tiny sizes, on the CPU, in minutes")
    p.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    p.add_argument("--budget-s", type=float, default=None, help="wall time for everything, --spent-s included "
                   f"(default {GPU_BUDGET_S:.0f}; --smoke {SMOKE_BUDGET_S:.0f}); every part's allowance scales with "
                   "it and pretraining gets what the others leave")
    p.add_argument("--spent-s", type=float, default=0.0, help="seconds already spent before this script (run.sh: "
                   "the bundle's install), counted against the budget")
    p.add_argument("--bench-seconds", type=float, default=None, help="timed seconds per throughput setting "
                   "(default 8, so that the seed run keeps its share of the budget; --smoke 0.5)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="device peak bf16 FLOP/s for MFU (default: the table in codenas.train.mfu; H100/H200 989e12)")
    p.add_argument("--mbpp", default=None, help="mbpp.jsonl for the data stage (default: $CODENAS_MBPP or the "
                   "copy `codenas data download` saved; without it mbpp-test is skipped)")
    p.add_argument("--skip", default="", help="comma list of steps to skip: environment,throughput,run,sampling")
    p.add_argument("override", nargs="*", help="extra section.key=value overrides of the seed preset (last wins)")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    global _LOG_FILE
    if args.log != "-":
        _LOG_FILE = open(args.log or out / "run.log", "w", encoding="utf-8")  # noqa: SIM115 - open for the run

    import torch

    from codenas.train.mfu import device_peak_flops

    sizes = SMOKE if args.smoke else GPU
    budget = args.budget_s or (SMOKE_BUDGET_S if args.smoke else GPU_BUDGET_S)
    allowed = allowances(budget)
    end = t0 + budget - args.spent_s  # every deadline below is a time.perf_counter() value
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    seconds = args.bench_seconds or (0.5 if args.smoke else 8.0)
    skip = {s for s in args.skip.split(",") if s}
    if args.smoke:
        # one thread: on a small shared CPU, OpenMP's barriers under contention cost far more than a second
        # core gives (10x slower steps measured with 2 threads on 2 busy cores)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and in the `codenas run` child
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    plan = {"budget_s": budget, "allowance_s": dict(allowed), "spent_s": {"install": round(args.spent_s, 1)}}
    summary: dict = {"smoke": args.smoke, "budget_s": budget, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "work": str(work), "plan": plan, "errors": {}}

    def save() -> None:
        summary["total_wall_s"] = args.spent_s + time.perf_counter() - t0
        plan["spent_s"].update(seed_run_parts((summary.get("seed") or {}).get("stages", {})))
        write_json(out / "plan.json", plan)
        write_json(out / "summary.json", summary)

    def step(name: str, part: str, fn):
        """Run one step; a failure is logged and recorded, and the steps after it still run."""
        started = time.perf_counter()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the figures of the other steps must still come back
            import traceback

            log(traceback.format_exc().rstrip())
            summary["errors"][name] = f"{type(e).__name__}: {e}"
            return None
        finally:
            plan["spent_s"][part] = round(plan["spent_s"].get(part, 0) + time.perf_counter() - started, 1)
            save()

    save()
    log("[1/4] environment")
    env = (step("environment", "environment", lambda: environment(device, sizes, args.peak_flops))
           if "environment" not in skip else None) or {}
    write_json(out / "environment.json", env)
    summary["environment"] = env
    for key in ("torch", "cuda", "device_name", "bf16_supported", "matmul_bf16_tflops", "peak_bf16_flops",
                "data_loading_tokens_per_s", "codenas"):
        log(f"  {key}: {env.get(key)}")
    peak = env.get("peak_bf16_flops") or args.peak_flops
    if not peak and env.get("matmul_bf16_tflops"):  # no table entry (a CPU): MFU against the measured matmul rate
        peak = env["matmul_bf16_tflops"] * 1e12
        log(f"  no peak known for this device: MFU is measured against the matmul rate ({peak:.3g} FLOP/s)")

    log(f"[2/4] training throughput ({seconds:g} s per setting)")
    deadline = t0 + allowed["environment"] + allowed["throughput"] - args.spent_s + allowed["install"]
    measured = (step("throughput", "throughput", lambda: throughput(device, sizes, seconds, peak, deadline))
                if "throughput" not in skip else None) or {"layouts": {}}
    write_json(out / "throughput.json", measured)
    summary["throughput"] = measured
    if device.type == "cuda":
        torch.cuda.empty_cache()

    log("[3/4] the seed experiment: codenas run --preset seed")
    remaining = end - time.perf_counter()
    user = list(args.override)
    if peak and peak != device_peak_flops(device):  # the loop's MFU against the same peak as step 2
        user = [f"pretrain.peak_flops={peak:.6g}", f"finetune.peak_flops={peak:.6g}", *user]
    overrides, pretrain_s = plan_overrides(sizes, args.smoke, remaining, measured, user, allowed)
    plan.update(remaining_s=round(remaining, 1), overrides=overrides)
    parts = list(plan["allowance_s"].items())
    at = [p for p, _ in parts].index("corpus") + 1
    plan["allowance_s"] = dict(parts[:at] + [("pretrain", round(pretrain_s, 1))] + parts[at:])
    write_json(out / "plan.json", plan)
    for item in overrides:
        log(f"  {item['override']:38s} {item['why']}")
    run_args = [o["override"] for o in overrides]
    if "run" not in skip:
        def refresh() -> None:
            summary["seed"] = seed_table(run_dir)
            save()

        run_deadline = end - allowed["sampling"] - allowed["margin"]
        run = step("run", "seed run", lambda: run_seed(run_dir, overrides, args.mbpp, run_deadline, refresh))
        if run:
            summary["run"] = {k: v for k, v in run.items() if k != "command"} | {"command": " ".join(run["command"])}
            if run["returncode"] != 0:
                summary["errors"]["run"] = f"codenas run exited {run['returncode']} (see run.log)"
                log(f"codenas run failed (exit {run['returncode']})")
        table = step("seed table", "seed run", lambda: seed_table(run_dir)) or {}
        write_json(out / "seed.json", table)
        summary["seed"] = table
        save()

    log("[4/4] sampling throughput: codenas' batched sampler vs transformers' generate")
    if "sampling" not in skip:
        sampled = step("sampling", "sampling", lambda: sampling(run_dir, run_args, device, end - allowed["margin"],
                                                                 work / "sampling-hf")) or {}
        write_json(out / "sampling.json", sampled)
        summary["sampling"] = sampled
        save()

    step("report", "margin", lambda: write_report(out, summary, run_dir, work))
    summary["wall_s"] = time.perf_counter() - t0
    save()
    log(f"wrote {out}/: {' '.join(sorted(p.name for p in out.iterdir()))}; the run's folders: {work}")
    log(f"seed_wall_s: {summary['wall_s']:.1f}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
