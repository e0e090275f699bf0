"""Model quality per token: the GPT-2 layout with AdamW (baseline) vs the modern layout with AdamW and with Muon.

Every setting pretrains on the same built corpus (the stdlib sample of the `tiny` preset built as its corpus stage
builds it: filtered, deduplicated, decontaminated, with the 2,048-token tokenizer the build trains), the same token
budget, the same seed (same initialisation stream and batch order) and the same fixed validation windows. The two
layouts come from `configs/`: `tiny` (GPT-2's layout) and `tiny_modern` (rope, rmsnorm, swiglu, qk_norm, no
biases; its SwiGLU width keeps the non-embedding parameter count within 1%).

Each setting gets its own learning-rate sweep: short runs (``--sweep-fraction`` of the budget) at each of its
candidate peak lrs (AdamW: ``--adamw-lrs`` for both layouts; Muon: ``--muon-lrs`` for the hidden matrices, with
AdamW for the rest at the modern layout's best AdamW lr), scored by their final val loss; then one run over the
whole budget at the chosen lr. Printed: each sweep, each setting's val-loss curve (tokens, val loss), final val
loss, tokens/s and wall time, and as the last line

    tokens_to_baseline_loss: X

the fraction of the baseline's tokens that the best setting needs to reach the baseline's final val loss (linear
interpolation between evaluations; ``inf`` when it never gets there; 1.0 when the baseline is best). The figures
also go to ``OUT/arch_quality_seed{S}.json``.

    nice python benchmarks/arch_quality.py --seed 0 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path


def _run(name: str, arch, corpus: Path, out: Path, *, tokens: int, lr: float, optimizer: str, muon_lr: float,
         args: argparse.Namespace) -> dict:
    """One pretraining run; returns its curve ``[(tokens, val_loss)]``, final loss, tokens/s and wall time."""
    from codenas.settings import PretrainSettings, TrainSettings
    from codenas.train.pretrain import pretrain

    tokens_per_step = args.batch_size * arch.context_length
    steps = max(args.evals, tokens // tokens_per_step)
    interval = max(1, steps // args.evals)
    training = TrainSettings(max_steps=steps, batch_size=args.batch_size, lr=lr, min_lr=lr / 10,
                             warmup_steps=max(1, steps // 20), eval_interval=interval, eval_batches=args.eval_batches,
                             log_interval=interval, seed=args.seed, dtype="fp32", device="cpu", optimizer=optimizer,
                             muon_lr=muon_lr)
    curve: list[tuple[int, float]] = []
    start = time.perf_counter()
    result = pretrain(settings=PretrainSettings(arch=arch.name), training=training, arch=arch,
                      tokenizer=corpus / "tokenizer.json", corpus=corpus, out=out / name, desc=name,
                      on_eval=lambda step, m: curve.append((step * tokens_per_step, m["val_loss"])),
                      save_checkpoints=False)
    wall = time.perf_counter() - start
    return {"name": name, "lr": lr, "muon_lr": muon_lr if optimizer == "muon" else None, "optimizer": optimizer,
            "steps": steps, "tokens": result["tokens"], "curve": curve, "final_val_loss": result["final_val_loss"],
            "wall_s": round(wall, 1), "tokens_per_s": round(result["tokens"] / wall, 1)}


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float:
    """Tokens at which ``curve`` first reaches ``target`` (linear between evaluations); inf if it never does."""
    previous = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None or previous[1] == loss:
                return float(tokens)
            t0, l0 = previous
            return t0 + (tokens - t0) * (l0 - target) / (l0 - loss)
        previous = (tokens, loss)
    return math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-tokens", type=int, default=400_000, help="Training tokens of each final run.")
    parser.add_argument("--sweep-fraction", type=float, default=0.25,
                        help="Share of the budget each lr-sweep run trains on.")
    parser.add_argument("--adamw-lrs", default="1e-3,2e-3,4e-3", help="Peak AdamW lrs swept for both layouts.")
    parser.add_argument("--muon-lrs", default="0.01,0.02,0.04", help="Peak Muon lrs swept (modern layout).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--evals", type=int, default=8, help="Evaluations per run (points of each curve).")
    parser.add_argument("--eval-batches", type=int, default=8, help="Fixed validation batches per evaluation.")
    parser.add_argument("--max-files", type=int, default=300, help="Stdlib files of the corpus (as the tiny preset).")
    parser.add_argument("--vocab-size", type=int, default=2048, help="Tokenizer size (as the tiny preset).")
    parser.add_argument("--baseline-arch", default="tiny")
    parser.add_argument("--modern-arch", default="tiny_modern")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default].")
    parser.add_argument("--out", type=Path, default=Path("runs/arch_quality"))
    parser.add_argument("--quiet", action="store_true", help="No per-run progress lines, only the figures.")
    args = parser.parse_args()

    import torch

    from codenas.corpus.build import build_cached
    from codenas.model.config import load_arch
    from codenas.model.model import GPT
    from codenas.model.tokenizer import load_tokenizer
    from codenas.progress import set_quiet
    from codenas.settings import CorpusSettings

    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = build_cached(["stdlib"], vocab_size=args.vocab_size,
                          settings=CorpusSettings(max_files=args.max_files, val_fraction=0.02, tasks=4))
    vocab = load_tokenizer(corpus / "tokenizer.json").get_vocab_size()
    archs = {kind: dataclasses.replace(load_arch(name), vocab_size=vocab)
             for kind, name in (("gpt2", args.baseline_arch), ("modern", args.modern_arch))}
    sizes = {kind: GPT(a).num_params(non_embedding=True) for kind, a in archs.items()}
    runs_dir = args.out / f"seed{args.seed}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; seed "
          f"{args.seed}; budget {args.budget_tokens:,} tokens per final run; non-embedding parameters: "
          + ", ".join(f"{k} {v:,}" for k, v in sizes.items()), flush=True)
    adamw_lrs = [float(x) for x in args.adamw_lrs.split(",")]
    muon_lrs = [float(x) for x in args.muon_lrs.split(",")]
    sweep_tokens = int(args.budget_tokens * args.sweep_fraction)
    started = time.perf_counter()

    def sweep(setting: str, arch, candidates: list[tuple[float, float]], optimizer: str) -> tuple[float, float]:
        scores = []
        for lr, muon_lr in candidates:
            tag = f"muon_lr {muon_lr:g} (adamw lr {lr:g})" if optimizer == "muon" else f"lr {lr:g}"
            r = _run(f"sweep_{setting}_{lr:g}_{muon_lr:g}", arch, corpus, runs_dir, tokens=sweep_tokens, lr=lr,
                     optimizer=optimizer, muon_lr=muon_lr, args=args)
            print(f"  sweep {setting}: {tag}: val loss {r['final_val_loss']:.4f} after {r['tokens']:,} tokens "
                  f"({r['wall_s']:.0f} s)", flush=True)
            scores.append((r["final_val_loss"], lr, muon_lr))
        best = min(scores)
        return best[1], best[2]

    settings = {}
    for setting, arch_kind, optimizer in (("gpt2_adamw", "gpt2", "adamw"), ("modern_adamw", "modern", "adamw"),
                                          ("modern_muon", "modern", "muon")):
        arch = archs[arch_kind]
        if optimizer == "adamw":
            lr, muon_lr = sweep(setting, arch, [(lr, 0.02) for lr in adamw_lrs], optimizer)
        else:
            adamw_lr = settings["modern_adamw"]["lr"]
            lr, muon_lr = sweep(setting, arch, [(adamw_lr, m) for m in muon_lrs], optimizer)
        r = _run(setting, arch, corpus, runs_dir, tokens=args.budget_tokens, lr=lr, optimizer=optimizer,
                 muon_lr=muon_lr, args=args)
        r["non_embedding_params"] = sizes[arch_kind]
        settings[setting] = r
        chosen = f"muon_lr {muon_lr:g}, adamw lr {lr:g}" if optimizer == "muon" else f"lr {lr:g}"
        print(f"{setting} ({chosen}): final val loss {r['final_val_loss']:.4f}, {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['wall_s']:.0f} s", flush=True)
        print("  curve (tokens: val loss): " + ", ".join(f"{t:,}: {v:.4f}" for t, v in r["curve"]), flush=True)

    baseline = settings["gpt2_adamw"]
    best_name = min(settings, key=lambda k: settings[k]["final_val_loss"])
    best = settings[best_name]
    if best_name == "gpt2_adamw":
        fraction = 1.0
    else:
        fraction = tokens_to_reach(best["curve"], baseline["final_val_loss"]) / baseline["tokens"]
    total = time.perf_counter() - started
    summary = {"seed": args.seed, "budget_tokens": args.budget_tokens, "sweep_tokens": sweep_tokens,
               "settings": settings, "best": best_name, "tokens_to_baseline_loss": fraction,
               "ranking": sorted(settings, key=lambda k: settings[k]["final_val_loss"]),
               "wall_s": round(total, 1), "load_end": os.getloadavg()[0]}
    (args.out / f"arch_quality_seed{args.seed}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ranking (best first): {' > '.join(summary['ranking'])}; whole run {total / 60:.1f} min, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"tokens_to_baseline_loss: {fraction:.3f}" if math.isfinite(fraction) else "tokens_to_baseline_loss: inf")


if __name__ == "__main__":
    main()
