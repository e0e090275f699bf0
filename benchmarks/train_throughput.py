"""Training throughput: our GPT vs transformers' GPT2LMHeadModel of identical shape (and MFU on CUDA).

Each (model, dtype, compile) setting runs in its own spawned process (so peak memory is per setting): a few
untimed warm-up steps, then timed steps of forward + backward + AdamW at the same batch and sequence length.
``--interleave`` instead runs all settings in one process, a step of each in turn, and rates each by its median
step time, so that the changing load of a shared machine hits every setting alike.
Each model is reported at its best setting (and best of ``--repeats`` interleaved runs); the last line is
``speedup_vs_hf_gpt2: X`` (ours / HF tokens/s).

Peak memory: on CPU the child's peak resident set (``ru_maxrss``) minus its resident set just before the model
was built (torch itself is already loaded then); on CUDA ``torch.cuda.max_memory_allocated``.
MFU (where the device's peak is known, or --peak-flops is given): ``6 * N * tokens/s / peak FLOP/s`` with N all
parameters (tied embeddings once); peaks come from the table in ``codenas.train.mfu`` (H100/H200 989 TFLOP/s).
``--threads`` sets the CPU threads of every setting (on a busy shared CPU one thread is often faster and far
steadier than two: OpenMP's barriers stall when another process holds a core).

    python benchmarks/train_throughput.py                      # CPU, tiny shape
    python benchmarks/train_throughput.py --device cuda --arch codenas_l8h512_regularized --batch-size 32
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import resource
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _build(kind: str, arch):
    import transformers

    from codenas.model.model import GPT

    if kind == "codenas":
        return GPT(arch)
    cfg = transformers.GPT2Config(
        vocab_size=arch.vocab_size, n_positions=arch.context_length, n_embd=arch.d_model, n_layer=arch.n_layer,
        n_head=arch.n_head, n_inner=arch.d_ff, activation_function="gelu_new", resid_pdrop=arch.dropout,
        embd_pdrop=arch.dropout, attn_pdrop=arch.dropout, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return transformers.GPT2LMHeadModel(cfg)


def _loss(kind: str, model, x, y):
    if kind == "codenas":
        return model(x, y)[1]
    return model(input_ids=x, labels=x).loss  # HF shifts labels itself: the same next-token loss


def measure(kind: str, arch_dict: dict, dtype: str, compile_model: bool, args: dict) -> dict:
    """Tokens/s and peak memory of one setting (runs in a child process)."""
    import torch

    from codenas.model.config import ArchConfig
    from codenas.model.model import parameter_counts

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    device = torch.device(args["device"])
    arch = ArchConfig.from_dict(arch_dict)
    rss_before = _rss_mb()
    model = _build(kind, arch).to(device).train()
    n_params = parameter_counts(model)[1]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    step_model = torch.compile(model) if compile_model else model
    B, T = args["batch_size"], args["seq_len"]
    x = torch.randint(0, arch.vocab_size, (B, T + 1), device=device)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with amp:
            loss = _loss(kind, step_model, inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before
    return {"tokens_per_s": args["steps"] * B * T / elapsed, "peak_mb": peak_mb, "params": n_params}


def interleaved(jobs: list[tuple[str, str, bool]], arch_dict: dict, args: dict) -> list[dict]:
    """All settings in this one process, one step of each in turn (order reversed every other round), so that a
    shared machine's changing load hits every setting alike; tokens/s from each setting's median step time."""
    import statistics

    import torch

    from codenas.model.config import ArchConfig
    from codenas.model.model import parameter_counts

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    arch = ArchConfig.from_dict(arch_dict)
    B, T = args["batch_size"], args["seq_len"]
    x = torch.randint(0, arch.vocab_size, (B, T + 1), generator=torch.Generator().manual_seed(0)).to(device)
    inputs, targets = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    steppers = []
    for kind, dtype, compile_model in jobs:
        torch.manual_seed(0)
        model = _build(kind, arch).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
        step_model = torch.compile(model) if compile_model else model

        def step(kind=kind, dtype=dtype, step_model=step_model, opt=opt) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
                loss = _loss(kind, step_model, inputs, targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(args["warmup"]):
            step()
        steppers.append((step, parameter_counts(model)[1]))
    times: list[list[float]] = [[] for _ in jobs]
    for r in range(args["steps"]):
        order = range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs)))
        for j in order:
            start = time.perf_counter()
            steppers[j][0]()
            times[j].append(time.perf_counter() - start)
    return [{"tokens_per_s": B * T / statistics.median(t), "peak_mb": float("nan"), "params": n}
            for t, (_, n) in zip(times, steppers, strict=True)]


def _run_isolated(*job) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, job)


def main() -> None:
    import torch

    from codenas.model.config import load_arch
    from codenas.train.loop import has_fast_bf16
    from codenas.train.mfu import device_peak_flops

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="tiny", help="arch name in configs/ or JSON path (default: tiny)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None, help="default: the arch's context_length")
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per setting")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", default=None,
                   help="comma list of fp32,bf16 (default: both where bf16 is native, else fp32)")
    p.add_argument("--compile", action="store_true", help="also try torch.compile for both models")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every setting this many times, interleaved, keeping the best (noisy machines)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="peak bf16 FLOP/s for MFU (default: the table in codenas.train.mfu for this GPU)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per setting (default: torch's choice)")
    p.add_argument("--interleave", action="store_true",
                   help="run every setting in one process, one step of each in turn, and rate each by its median "
                        "step time: steadier on a shared machine (no peak memory then)")
    args = p.parse_args()

    arch = load_arch(args.arch)
    if args.seq_len:
        arch = dataclasses.replace(arch, context_length=max(arch.context_length, args.seq_len))
    device = torch.device(args.device)
    dtypes = args.dtypes.split(",") if args.dtypes else (["fp32", "bf16"] if has_fast_bf16(device) else ["fp32"])
    settings = [(d, c) for d in dtypes for c in ([False, True] if args.compile else [False])]
    job = {"device": args.device, "batch_size": args.batch_size, "seq_len": args.seq_len or arch.context_length,
           "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    print(f"arch {arch.name}: {arch.n_layer} layers, d_model {arch.d_model}, {arch.n_head} heads, d_ff {arch.d_ff}, "
          f"vocab {arch.vocab_size}; batch {job['batch_size']} x seq {job['seq_len']} on {args.device}; "
          f"{args.threads or torch.get_num_threads()} threads")
    best: dict[str, dict] = {}
    runs = [(kind, d, c) for _ in range(args.repeats) for kind in ("codenas", "hf_gpt2") for d, c in settings]
    together = interleaved(runs, arch.to_dict(), job) if args.interleave else None
    for n, (kind, dtype, compiled) in enumerate(runs):
        r = together[n] if together else _run_isolated(kind, arch.to_dict(), dtype, compiled, job)
        label = f"{dtype}{' +compile' if compiled else ''}"
        print(f"  {kind:8s} {label:14s} {r['tokens_per_s']:10.0f} tokens/s  peak {r['peak_mb']:8.1f} MB  "
              f"params {r['params']:,}")
        if kind not in best or r["tokens_per_s"] > best[kind]["tokens_per_s"]:
            best[kind] = {**r, "setting": label}
    peak = device_peak_flops(device, args.peak_flops)
    for kind, r in best.items():
        mfu = f"  MFU {6 * r['params'] * r['tokens_per_s'] / peak:.1%}" if peak else ""
        print(f"best {kind}: {r['tokens_per_s']:.0f} tokens/s ({r['setting']}), peak {r['peak_mb']:.1f} MB{mfu}")
    print(f"speedup_vs_hf_gpt2: {best['codenas']['tokens_per_s'] / best['hf_gpt2']['tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
