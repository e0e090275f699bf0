"""The seed experiment on one GPU within a wall-time budget, as one command; ``--smoke`` runs the same steps tiny.

Three steps, in order, everything written under ``--out`` (docs/gpu.md says how to prepare an offline machine):

1. ``environment.json``: torch / CUDA versions, device name and count, bf16 support, the measured bf16 matmul
   TFLOP/s (a square matmul timed after warm-up), the table's peak for the device (``codenas.train.mfu``), and how
   fast the pretraining batch source draws batches (tokens/s; it must stay well above what the GPU trains).
2. ``throughput.json``: training throughput and MFU (6·N·tokens/s over the peak) at the seed shape for the GPT-2
   layout (``codenas_l8h512_regularized``) and, where its config exists, the modern layout
   (``codenas_l8h512_modern``): bf16 autocast, the loop's own optimizer (fused AdamW on CUDA) and loss, eager and
   ``torch.compile``. Batch sizes 32, 64, 128, 256 are probed (3 s each, eager) until one does not fit or stops
   paying (<5% more tokens/s); the best is then measured for ``--bench-seconds`` (15) in both modes.
3. ``run/``: ``codenas run --preset seed`` in a child process with overrides that fit the remaining budget
   (``plan.json`` lists each override and why): pretraining steps from the throughput measured in step 2, LoRA
   with the seed's settings for as many 2,000-step evaluation intervals as fit, evaluation of the base and the
   LoRA model on ``mini`` and ``mbpp-test`` with 20 samples per problem at temperature 0.8 (pass@1, pass@10), the
   report (``run/report.md``, ``run/report.html``). ``seed.json`` holds the table: val loss after pretraining,
   pretraining tokens/s and MFU as the loop logged them, pass@k of each model on each benchmark, wall time per
   stage.

``summary.json`` gathers the three; the last printed line is ``seed_wall_s: X``.

    python benchmarks/gpu_seed.py --out results/h200            # on the GPU machine (9-minute budget)
    python benchmarks/gpu_seed.py --smoke --out /tmp/smoke      # the same steps, tiny, on a CPU (about 2 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

GPT2_LAYOUT = "codenas_l8h512_regularized"
MODERN_LAYOUT = "codenas_l8h512_modern"
SEED_BATCH = 32  # the seed preset's pretraining batch (sequences of 512 tokens)


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
            probe_seconds=3.0, matmul_n=8192, compile_backend="inductor", run_overrides=())
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
        "eval.limit=2", "eval.max_new_tokens=16",
    ),
)


def log(message: str) -> None:
    print(message, flush=True)


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

    from codenas.train.loop import has_fast_bf16
    from codenas.train.mfu import device_peak_flops

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
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

    from codenas.model.model import GPT
    from codenas.settings import TrainSettings
    from codenas.train.loop import autocast_dtype, lm_loss, make_optimizer
    from codenas.train.mfu import count_params, mfu

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(arch).to(device).train()
    n_params = count_params(model)
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


def throughput(device, sizes: Sizes, seconds: float, peak: float | None) -> dict:
    import torch

    from codenas.model.config import ArchConfig, load_arch
    from codenas.paths import resolve_config

    layouts = {}
    for name in sizes.layouts:
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
            r = measure_training(arch, best["batch_size"], seq_len, compile_model=compiled, seconds=seconds,
                                 device=device, peak=peak, backend=sizes.compile_backend)
            r["compile_backend"] = sizes.compile_backend if compiled else None
            runs["compile" if compiled else "eager"] = r
            mfu_text = f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else ""
            log(f"  {name} batch {r['batch_size']} {'compile' if compiled else 'eager'}: "
                f"{r['tokens_per_s']:,.0f} tokens/s{mfu_text} (warm-up {r['warmup_s']:.1f} s)")
        seed_batch = next((p for p in probes if p.get("batch_size") == sizes.batch_sizes[0] and "oom" not in p), None)
        layouts[name] = {"arch": arch.to_dict(), "probes": probes, "best_batch_size": best["batch_size"], **runs,
                         "best": max(runs.values(), key=lambda r: r["tokens_per_s"]), "seed_batch_probe": seed_batch}
    return {"bench_seconds": seconds, "peak_flops": peak, "layouts": layouts}


# --- 3. the seed experiment --------------------------------------------------------------------------------------


def plan_overrides(sizes: Sizes, smoke: bool, remaining_s: float, measured: dict, user: list[str]) -> list[dict]:
    """Overrides of the seed preset that fit ``remaining_s``, each with its reason."""
    gpt2 = measured["layouts"].get(sizes.layouts[0], {})
    plan = [{"override": o, "why": "smoke: tiny sizes so that every step runs on a CPU in seconds"}
            for o in sizes.run_overrides]
    if smoke:
        plan += [{"override": "pretrain.max_steps=4", "why": "smoke"},
                 {"override": "pretrain.eval_interval=2", "why": "smoke: an evaluation and checkpoint mid-run"},
                 {"override": "finetune.max_steps=2", "why": "smoke"},
                 {"override": "finetune.eval_interval=2", "why": "smoke: one LoRA evaluation"},
                 {"override": "eval.samples=10", "why": "smoke: pass@10 needs 10 samples"}]
    else:
        # what is left after the other stages' allowance: data build and BPE training (~60 s on 16 cores), the corpus
        # stage capped at 4,000 files (all of stdlib + site-packages: ~3 min on 16 cores, estimated from
        # benchmarks/corpus_build.py on 2 cores), LoRA (one 2,000-step evaluation interval), four evaluations
        # (mini and 50 mbpp-test problems, 20 samples each), the report
        fixed_s = 60 + 60 + 60 + 90 + 10
        pretrain_s = max(30.0, remaining_s - fixed_s)
        # compile when the time it saves over the pretraining run exceeds its compilation time (as in step 2)
        eager, compiled = gpt2.get("eager", {}), gpt2.get("compile", {})
        speedup = compiled.get("tokens_per_s", 0) / eager.get("tokens_per_s", math.inf)
        compile_cost = compiled.get("warmup_s", 0) - eager.get("warmup_s", 0)
        compile_wins = speedup > 1.05 and pretrain_s * (1 - 1 / speedup) > compile_cost
        plan.append({"override": f"pretrain.compile={'true' if compile_wins else 'false'}",
                     "why": f"torch.compile ran {speedup:.2f}x eager in step 2 and took {compile_cost:.0f} s "
                            f"to compile: {'worth' if compile_wins else 'not worth'} it for {pretrain_s:.0f} s"})
        if compile_wins:
            pretrain_s -= compile_cost
        else:
            speedup = 1.0
        probe = gpt2.get("seed_batch_probe") or gpt2.get("best") or {}
        tokens_per_s = probe.get("tokens_per_s", 0) * speedup * 0.9  # the loop also evaluates and checkpoints
        steps = int(min(20000, max(200, pretrain_s * tokens_per_s / (SEED_BATCH * 512))))
        plan.append({"override": f"pretrain.max_steps={steps}",
                     "why": f"{pretrain_s:.0f} s of pretraining at the ~{tokens_per_s:,.0f} tokens/s measured at "
                            f"batch {SEED_BATCH} in step 2 (the preset's 20,000 steps do not fit)"})
        plan.append({"override": f"pretrain.eval_interval={max(100, steps // 4)}",
                     "why": "four evaluations and checkpoints in the shortened run"})
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
    return plan


def run_seed(out: Path, plan: list[dict], mbpp: str | None) -> dict:
    """``codenas run --preset seed`` with the plan's overrides in a child process; its output goes to run.log."""
    cmd = [sys.executable, "-m", "codenas.cli", "run", "--preset", "seed", "--out", str(out / "run")]
    if mbpp:
        cmd += ["--mbpp", mbpp]
    cmd += [p["override"] for p in plan]
    log("  $ " + " ".join(cmd))
    start = time.perf_counter()
    with open(out / "run.log", "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            sys.stdout.write("    " + line)
        rc = proc.wait()
    return {"command": cmd, "returncode": rc, "wall_s": time.perf_counter() - start}


def seed_table(run_dir: Path) -> dict:
    """The experiment's figures, read from the run folder's own outputs."""
    from codenas.io import read_json, read_jsonl
    from codenas.run.cache import read_stages

    table: dict = {"stages": {name: s.get("wall_s") for name, s in read_stages(run_dir / "stages.json").items()}}
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


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for every result (created; files in it are replaced)")
    p.add_argument("--smoke", action="store_true", help="the same steps with tiny sizes, on the CPU, in minutes")
    p.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="wall time for all three steps; the seed run's pretraining gets what the others leave")
    p.add_argument("--bench-seconds", type=float, default=None, help="timed seconds per throughput setting "
                   "(default 15, so that the seed run keeps its share of the budget; --smoke 0.5)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="device peak bf16 FLOP/s for MFU (default: the table in codenas.train.mfu; H100/H200 989e12)")
    p.add_argument("--mbpp", default=None, help="mbpp.jsonl for the data stage (default: $CODENAS_MBPP or the "
                   "copy `codenas data download` saved; without it mbpp-test is skipped)")
    p.add_argument("--skip", default="", help="comma list of steps to skip: environment,throughput,run")
    p.add_argument("override", nargs="*", help="extra section.key=value overrides of the seed preset (last wins)")
    args = p.parse_args(argv)

    import torch

    from codenas.train.mfu import device_peak_flops

    t0 = time.perf_counter()
    sizes = SMOKE if args.smoke else GPU
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    seconds = args.bench_seconds or (0.5 if args.smoke else 15.0)
    skip = {s for s in args.skip.split(",") if s}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        # one thread: on a small shared CPU, OpenMP's barriers under contention cost far more than a second
        # core gives (10x slower steps measured with 2 threads on 2 busy cores)
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and in the `codenas run` child
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    summary: dict = {"smoke": args.smoke, "budget_s": args.budget_s, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    log("[1/3] environment")
    env = environment(device, sizes, args.peak_flops) if "environment" not in skip else {}
    write_json(out / "environment.json", env)
    summary["environment"] = env
    for key in ("torch", "cuda", "device_name", "bf16_supported", "matmul_bf16_tflops", "peak_bf16_flops",
                "data_loading_tokens_per_s"):
        log(f"  {key}: {env.get(key)}")
    peak = env.get("peak_bf16_flops") or args.peak_flops
    if not peak and env.get("matmul_bf16_tflops"):  # no table entry (a CPU): MFU against the measured matmul rate
        peak = env["matmul_bf16_tflops"] * 1e12
        log(f"  no peak known for this device: MFU is measured against the matmul rate ({peak:.3g} FLOP/s)")

    log(f"[2/3] training throughput ({seconds:g} s per setting)")
    measured = throughput(device, sizes, seconds, peak) if "throughput" not in skip else {"layouts": {}}
    write_json(out / "throughput.json", measured)
    summary["throughput"] = measured
    if device.type == "cuda":
        torch.cuda.empty_cache()

    log("[3/3] the seed experiment: codenas run --preset seed")
    remaining = args.budget_s - (time.perf_counter() - t0)
    user = list(args.override)
    if peak and peak != device_peak_flops(device):  # the loop's MFU against the same peak as step 2
        user = [f"pretrain.peak_flops={peak:.6g}", f"finetune.peak_flops={peak:.6g}", *user]
    plan = plan_overrides(sizes, args.smoke, remaining, measured, user)
    write_json(out / "plan.json", {"remaining_s": remaining, "overrides": plan})
    for item in plan:
        log(f"  {item['override']:38s} {item['why']}")
    if "run" not in skip:
        run = run_seed(out, plan, args.mbpp)
        summary["run"] = {k: v for k, v in run.items() if k != "command"} | {"command": " ".join(run["command"])}
        table = seed_table(out / "run")
        write_json(out / "seed.json", table)
        summary["seed"] = table
        if run["returncode"] != 0:
            log(f"codenas run failed (exit {run['returncode']}); see {out / 'run.log'}")
    summary["wall_s"] = time.perf_counter() - t0
    write_json(out / "summary.json", summary)
    ok = "run" in skip or summary["run"]["returncode"] == 0
    log(f"wrote {out}/: environment.json throughput.json plan.json seed.json summary.json run/ run.log")
    log(f"seed_wall_s: {summary['wall_s']:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
