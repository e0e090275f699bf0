"""Memory and step time of LoRA vs full fine-tuning of l8h512 on the same batch.

Each mode runs in its own child process (so peak RSS is its own): the model is built, wrapped with LoRA (rank 8,
alpha 16, qkv_proj + out_proj) or not, and trained a few steps with the training loop's AdamW on one fixed batch
of random token ids (``--batch-size`` rows of ``--seq-len`` tokens, loss on every token). Reported per mode:
trainable parameters, bytes of parameters, gradients and optimizer state (counted from the tensors themselves),
peak process RSS (and peak CUDA memory on a GPU), and the median step time after one warm-up step.
The last line is ``lora_optimizer_state_ratio: X`` (LoRA's optimizer state / full fine-tuning's).

    python benchmarks/finetune_memory.py --steps 3 --batch-size 8 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(mode: str, steps: int, batch_size: int, seq_len: int, device: str) -> dict:
    """Train ``steps`` steps in this process and return the figures of ``mode`` (``full`` or ``lora``)."""
    from codenas.model.config import load_arch
    from codenas.model.model import GPT, parameter_counts
    from codenas.settings import TrainSettings
    from codenas.train.loop import make_optimizer
    from codenas.train.lora import LoraSettings, apply_lora

    torch.manual_seed(0)
    arch = load_arch("codenas_l8h512_regularized")
    model = GPT(arch)
    if mode == "lora":
        model = apply_lora(model, LoraSettings())
    dev = torch.device(device)
    model.to(dev).train()
    optimizer = make_optimizer(model, TrainSettings(lr=1e-4, min_lr=1e-5), dev)
    ids = torch.randint(0, arch.vocab_size, (batch_size, seq_len + 1), generator=torch.Generator().manual_seed(0))
    inputs, targets = ids[:, :-1].to(dev), ids[:, 1:].to(dev)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        _, loss = model(inputs, targets)
        loss.backward()
        grads = _bytes(p.grad for p in model.parameters() if p.grad is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    trainable, total = parameter_counts(model)
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    figures = {
        "mode": mode, "trainable_params": trainable, "total_params": total,
        "param_bytes": _bytes({id(p): p for p in model.parameters()}.values()),
        "grad_bytes": grads, "optimizer_state_bytes": _bytes(state),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_time_s": statistics.median(times[1:]),
    }
    if dev.type == "cuda":
        figures["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per batch")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per row (l8h512 allows up to 512)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.batch_size, args.seq_len, args.device)))
        return

    results = {}
    for mode in ("full", "lora"):
        child = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps),
                                "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                                "--device", args.device], capture_output=True, text=True, check=True)
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"l8h512, batch {args.batch_size} x {args.seq_len} tokens, {args.steps} steps, device {args.device}")
    print(f"{'':24}{'full':>14}{'lora':>14}")
    for key in ("trainable_params", "param_bytes", "grad_bytes", "optimizer_state_bytes", "peak_rss_mb",
                "step_time_s", "peak_cuda_mb"):
        if key in results["full"]:
            full, lora = results["full"][key], results["lora"][key]
            fmt = "{:>14,.3f}" if isinstance(full, float) else "{:>14,}"
            print(f"{key:24}" + fmt.format(full) + fmt.format(lora))
    ratio = results["lora"]["optimizer_state_bytes"] / results["full"]["optimizer_state_bytes"]
    print(f"lora_optimizer_state_ratio: {ratio:.5f}")


if __name__ == "__main__":
    main()
