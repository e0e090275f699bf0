"""Does the search's proxy predict full training? Rank correlation between short and long runs of sampled shapes.

``K`` architectures are drawn at random (seeded) from the default search space under a parameter budget, with the
context length fixed (``--context-length``; a search should list only the final model's, see docs/search.md), shapes
over the budget or invalid ones drawn again, as the search does. Each is trained with the search's own proxy recipe
(``codenas.search.study.proxy_training``: the search's batch size, learning rates, warmup and cosine decay, same
seed) at the proxy budget ``B``, at ``B/2`` and ``B/4``, and at the full budget ``F * B`` (``F >= 8``) with the same
recipe at a final run's learning rates (``--full-lr``, ``--full-muon-lr``): same data, same seed, each run with its
own schedule over its own budget, each scored once at its end on the same ``--val-tokens`` held-out tokens (fixed
windows). Then Kendall's tau-b and Spearman's rho between the full runs' final held-out loss and each predictor:

- ``proxy``: the final held-out loss of the proxy run (what the search ranks by without ``--extrapolate-to``);
- ``proxy_half``, ``proxy_quarter``: the same at half and a quarter of the budget;
- ``proxy_extrapolated``: the B/2 and B losses extended linearly in log(tokens) to the full budget (what
  ``codenas search --extrapolate-to F*B`` ranks by: ``codenas.search.study.extrapolate``);
- ``non_embedding_params`` and ``flops_per_token``: training-free, "more is better" (their negatives are correlated,
  so every predictor's tau is +1 when it orders the shapes exactly as the full runs do).

Printed: one line per run, the table of predictors, where the proxy's winner ranks after full training; the last
line is ``kendall_tau: X`` for the search's score: the proxy (the search's default), or with ``--extrapolate`` the
extrapolated proxy (``codenas search --extrapolate-to``). Everything also
goes to ``OUT/search_validity.json`` (and, after each shape, ``OUT/search_validity.partial.json``).

    nice python benchmarks/search_validity.py                 # CPU default: ~7 CPU-minutes (~30 min on a busy 2 cores)
    python benchmarks/search_validity.py --scale --device cuda  # more shapes, bigger budgets, for a GPU
    python benchmarks/search_validity.py --smoke               # seconds: the test suite runs this
    # another proxy recipe against the full runs of an earlier run, training only the proxies:
    python benchmarks/search_validity.py --lr 1e-3 --muon-lr 0.02 --proxy-only --out runs/sv_lr1e-3 \\
        --full-from runs/search_validity/search_validity.json

The data every run trains on comes from ``benchmark_data`` (the stdlib sample of the ``tiny`` preset and a
tokenizer trained on it): change that one function to measure on another corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

# preset -> defaults of the flags left unset: the CPU default, a GPU scale, and a smoke run of seconds
PRESETS = {
    "default": {"archs": 10, "max_params": 1_000_000, "proxy_tokens": 20_480, "full_factor": 8, "batch_size": 4,
                "evals": 4, "val_tokens": 50_000, "context_length": "256", "vocab_size": 2048, "max_files": 300,
                "val_fraction": 0.05, "device": "cpu"},
    "scale": {"archs": 24, "max_params": 20_000_000, "proxy_tokens": 4_000_000, "full_factor": 8, "batch_size": 32,
              "evals": 4, "val_tokens": 500_000, "context_length": "256", "vocab_size": 8192, "max_files": 0,
              "val_fraction": 0.01, "device": "auto"},
    "smoke": {"archs": 3, "max_params": 60_000, "proxy_tokens": 512, "full_factor": 8, "batch_size": 2, "evals": 2,
              "val_tokens": 256, "context_length": "16,32", "vocab_size": 300, "max_files": 12, "val_fraction": 0.2,
              "device": "cpu"},
}


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either sequence handled as in scipy.stats.kendalltau); nan when either is
    constant."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's correlation of the (tie-averaged) ranks; nan when either is constant."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


@dataclasses.dataclass(frozen=True)
class BenchData:
    """What every run trains on: a built corpus and its tokenizer."""

    tokenizer: Path
    corpus: Path
    val_tokens: int  # in the held-out split


def benchmark_data(out: Path, vocab_size: int, max_files: int, val_fraction: float = 0.05,
                   min_val_tokens: int = 0) -> BenchData:
    """The stdlib sample of the ``tiny`` preset (``max_files`` files; 0 = all) built once into the cache the way
    every pretraining corpus is (filtered, deduplicated, decontaminated, a ``vocab_size`` BPE trained on its clean
    documents), with ``val_fraction`` of its documents held out: the preset's share of 300 files holds about 2k
    tokens, too few to rank shapes whose losses differ by hundredths. Fails when the held-out split has fewer than
    ``min_val_tokens`` tokens. The one place to change to measure on another corpus."""
    from codenas.corpus.build import build_cached
    from codenas.io import read_json
    from codenas.settings import CorpusSettings

    settings = CorpusSettings(max_files=max_files or None, val_fraction=val_fraction)
    corpus = build_cached(["stdlib"], vocab_size=vocab_size, settings=settings)
    val_tokens = read_json(corpus / "manifest.json")["tokens"]["val"]
    if val_tokens < min_val_tokens:
        raise SystemExit(f"the benchmark corpus {corpus} holds {val_tokens:,} validation tokens, fewer than the "
                         f"{min_val_tokens:,} evaluated: raise --val-fraction or --max-files, or lower --val-tokens")
    return BenchData(tokenizer=corpus / "tokenizer.json", corpus=corpus, val_tokens=val_tokens)


def eval_batches_for(val_tokens: int, batch_size: int, context_length: int) -> int:
    """Validation batches covering at least ``val_tokens`` tokens at this context length: every shape is scored on
    (nearly) the same held-out tokens, whatever its context."""
    return max(1, math.ceil(val_tokens / (batch_size * context_length)))


# the arguments a full run's loss depends on: an earlier run's full losses are reused only when they are equal
FULL_RUN_ARGS = ("max_params", "proxy_tokens", "full_factor", "batch_size", "evals", "val_tokens", "context_length",
                 "vocab_size", "max_files", "val_fraction", "device", "dtype", "full_lr", "full_muon_lr", "seed")


def arg_differences(earlier: dict, args: dict, keys: Sequence[str]) -> list[str]:
    """``"key: X there, Y here"`` for each of ``keys`` whose value an earlier run's ``earlier`` args do not share."""
    return [f"{k}: {earlier.get(k)!r} there, {args[k]!r} here" for k in keys if earlier.get(k) != args[k]]


def full_runs_from(path: Path, args: dict, data: BenchData, budgets: dict) -> dict[str, dict]:
    """The full runs of an earlier ``search_validity.json``, keyed by their shape and optimizer, after checking that
    they were trained with the same settings, data and budgets as this run's would be."""
    earlier = json.loads(Path(path).read_text())
    diffs = arg_differences(earlier["args"], args, FULL_RUN_ARGS)
    if earlier["budgets"]["full"] != budgets["full"] or earlier.get("val_split_tokens",
                                                                     data.val_tokens) != data.val_tokens:
        diffs.append("the full budget or the held-out split differ")
    if diffs:
        raise SystemExit(f"{path}: its full runs were trained otherwise ({'; '.join(diffs)})")
    return {json.dumps([r["arch"], r["optimizer"]], sort_keys=True): r for r in earlier["shapes"]}


def sample_archs(k: int, max_params: int, vocab_size: int, seed: int, space) -> list[tuple]:
    """``k`` distinct ``(arch, optimizer)`` drawn at random from ``space`` under ``max_params`` parameters."""
    import optuna

    from codenas.search.space import count_params, optimizer_of, sample_arch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    chosen, seen = [], set()
    for _ in range(100_000):
        if len(chosen) == k:
            return chosen
        trial = study.ask()
        arch, _ = sample_arch(trial, space, vocab_size, name=f"shape{len(chosen)}")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if arch is None or count_params(arch) > max_params:
            continue
        key = (json.dumps(arch.to_dict(), sort_keys=True), optimizer_of(trial.params))
        if key not in seen:
            seen.add(key)
            chosen.append((dataclasses.replace(arch, name=f"shape{len(chosen)}"), optimizer_of(trial.params)))
    raise SystemExit(f"could not draw {k} distinct shapes under {max_params:,} parameters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", action="store_true", help="Bigger: more shapes, 20M parameters, 4M-token proxy.")
    size.add_argument("--smoke", action="store_true", help="Seconds: three tiny shapes (a test runs this).")
    parser.add_argument("--archs", type=int, help="Shapes drawn (K) [10].")
    parser.add_argument("--max-params", type=int, help="Parameter budget of the drawn shapes [1,000,000].")
    parser.add_argument("--context-length", help="Context lengths of the space, comma-separated [256: a search "
                                                 "should list only the final model's; see docs/search.md].")
    parser.add_argument("--proxy-tokens", type=int, help="The proxy's token budget B [20,480].")
    parser.add_argument("--full-factor", type=int, help="Full budget = this times B, at least 8 [8].")
    parser.add_argument("--batch-size", type=int, help="Sequences per step, every run (the search's --batch-size) "
                                                       "[4: more steps in a small budget].")
    parser.add_argument("--evals", type=int, help="Evaluations per run (the search's --evals) [4].")
    parser.add_argument("--val-tokens", type=int, help="Held-out tokens every run is scored on, as fixed windows "
                                                       "[50,000].")
    parser.add_argument("--val-fraction", type=float, help="Share of the corpus's documents held out [0.05].")
    parser.add_argument("--vocab-size", type=int, help="Tokenizer trained on the corpus sample [2048].")
    parser.add_argument("--max-files", type=int, help="Stdlib files of the corpus (0: all) [300].")
    parser.add_argument("--device", help="cpu, cuda, auto [cpu].")
    parser.add_argument("--dtype", default="fp32", help="Training dtype: fp32 (fast on CPUs), bf16 or auto.")
    parser.add_argument("--lr", type=float, default=None, help="The proxy runs' (B/4, B/2, B) peak AdamW learning "
                                                              "rate: the search's --lr [its default].")
    parser.add_argument("--muon-lr", type=float, default=None, help="The proxy runs' Muon learning rate: the search's "
                                                                   "--muon-lr [its default].")
    parser.add_argument("--full-lr", type=float, default=1e-3, help="The full runs' peak AdamW learning rate [1e-3, "
                                                                   "the tiny preset's].")
    parser.add_argument("--full-muon-lr", type=float, default=0.02, help="The full runs' Muon learning rate [0.02, "
                                                                        "the tiny preset's].")
    parser.add_argument("--proxy-batch-size", type=int, default=None,
                        help="Sequences per step of the proxy runs only (more steps in the same tokens) "
                             "[--batch-size].")
    parser.add_argument("--full-from", type=Path, default=None,
                        help="Take the full runs' losses from this earlier search_validity.json (same shapes, data and "
                             "full-run settings; checked) and train only the proxies.")
    parser.add_argument("--proxy-only", action="store_true",
                        help="Train no B/2 and B/4 runs (their predictors are left out): with --full-from, the "
                             "cheapest way to try another proxy recipe.")
    parser.add_argument("--extrapolate", action="store_true",
                        help="The last line is for the proxy extrapolated to the full budget (the score of codenas "
                             "search --extrapolate-to) instead of the plain proxy (the search's default score).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draw and of every run.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default].")
    parser.add_argument("--out", type=Path, default=None, help="Output folder [runs/search_validity[_PRESET]].")
    parser.add_argument("--quiet", action="store_true", help="No per-run progress lines, only the figures.")
    args = parser.parse_args()
    preset = "scale" if args.scale else "smoke" if args.smoke else "default"
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.full_factor < 8 and not args.smoke:
        parser.error("--full-factor must be at least 8")
    out = args.out or Path("runs") / ("search_validity" if preset == "default" else f"search_validity_{preset}")

    import torch

    from codenas.model.tokenizer import load_tokenizer
    from codenas.progress import set_quiet
    from codenas.search.space import SearchSpace, count_params, flops_per_token
    from codenas.search.study import extrapolate, proxy_training
    from codenas.settings import PretrainSettings, SearchSettings
    from codenas.train.pretrain import pretrain

    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    data = benchmark_data(out, args.vocab_size, args.max_files, args.val_fraction, args.val_tokens)
    vocab = load_tokenizer(data.tokenizer).get_vocab_size()
    contexts = tuple(int(c) for c in args.context_length.split(","))
    space = SearchSpace(context_length=contexts)
    if args.smoke:  # the default space's smallest shape has ~100k parameters: too slow for a test
        space = SearchSpace(n_layer=(1, 2), n_head=(2,), d_model=(16, 32), d_ff_ratio=(2,), context_length=contexts)
    search = SearchSettings(max_params=args.max_params, budget_tokens=args.proxy_tokens, batch_size=args.batch_size,
                            evals=args.evals, seed=args.seed, device=args.device,
                            dtype=args.dtype,
                            **{k: v for k, v in (("lr", args.lr), ("muon_lr", args.muon_lr)) if v is not None})
    shapes = sample_archs(args.archs, args.max_params, vocab, args.seed, space)
    budgets = {"proxy_quarter": args.proxy_tokens // 4, "proxy_half": args.proxy_tokens // 2,
               "proxy": args.proxy_tokens, "full": args.proxy_tokens * args.full_factor}
    if args.proxy_only:
        budgets = {k: v for k, v in budgets.items() if k in ("proxy", "full")}
    # the search's proxy recipe; the full runs train like a final run, at the final training's learning rates
    proxy_search = dataclasses.replace(search, batch_size=args.proxy_batch_size or search.batch_size)
    full_search = dataclasses.replace(search, lr=args.full_lr, muon_lr=args.full_muon_lr)
    earlier = full_runs_from(args.full_from, vars(args), data, budgets) if args.full_from else {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; {preset}: "
          f"{len(shapes)} shapes under {args.max_params:,} parameters; budgets (tokens) "
          + ", ".join(f"{k} {v:,}" for k, v in budgets.items()), flush=True)
    started = time.perf_counter()
    results = []
    for arch, optimizer in shapes:
        row = {"name": arch.name, "arch": arch.to_dict(), "optimizer": optimizer, "params": count_params(arch),
               "non_embedding_params": count_params(arch, non_embedding=True), "flops_per_token": flops_per_token(arch)}
        for budget_name, tokens in budgets.items():
            key = json.dumps([row["arch"], optimizer], sort_keys=True)
            if budget_name == "full" and args.full_from:
                if key not in earlier:
                    raise SystemExit(f"{args.full_from} has no full run of {arch.name} ({row['arch']}, {optimizer})")
                row |= {k: v for k, v in earlier[key].items() if k.startswith("full")}
                continue
            training = proxy_training(full_search if budget_name == "full" else proxy_search, arch, optimizer, tokens)
            # the search's schedule; only the final evaluation is needed here (evaluations do not change training),
            # on the same held-out tokens for every shape
            training = dataclasses.replace(training, eval_interval=training.max_steps, eval_batches=eval_batches_for(
                args.val_tokens, training.batch_size, arch.context_length))
            row["val_tokens_scored"] = training.eval_batches * training.batch_size * arch.context_length
            start, cpu = time.perf_counter(), time.process_time()
            result = pretrain(settings=PretrainSettings(arch=arch.name), training=training,
                              arch=arch, tokenizer=data.tokenizer, corpus=data.corpus,
                              out=out / "runs" / f"{arch.name}_{budget_name}", save_checkpoints=False,
                              desc=f"{arch.name} {budget_name}")
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            row[budget_name] = result["final_val_loss"]
            row[f"{budget_name}_tokens"] = result["tokens"]
            row[f"{budget_name}_wall_s"] = round(wall, 1)
            row[f"{budget_name}_cpu_s"] = round(cpu, 1)
            print(f"{arch.name} ({arch.n_layer}L d{arch.d_model} ff{arch.d_ff} h{arch.n_head}/kv{arch.n_kv_head} "
                  f"ctx{arch.context_length} drop{arch.dropout:.2f} {arch.position}/{arch.norm}/{arch.mlp}"
                  f"{'/qk' if arch.qk_norm else ''} {optimizer}, {row['params']:,} params) {budget_name}: val loss "
                  f"{result['final_val_loss']:.4f} after {result['tokens']:,} tokens, {wall:.0f} s "
                  f"(cpu {cpu:.0f} s)", flush=True)
        results.append(row)
        # the shapes so far, so that an interrupted run still leaves its measurements
        (out / "search_validity.partial.json").write_text(json.dumps({"budgets": budgets, "shapes": results},
                                                                     indent=2) + "\n")

    full = [r["full"] for r in results]
    predictors = {name: [r[name] for r in results] for name in ("proxy", "proxy_half", "proxy_quarter")
                  if name in budgets}
    if "proxy_half" in budgets:  # the learning curve of the B/2 and B runs, extended linearly in log(tokens)
        predictors["proxy_extrapolated"] = [extrapolate(r["proxy_half"], r["proxy_half_tokens"], r["proxy"],
                                                        r["proxy_tokens"], r["full_tokens"]) for r in results]
    predictors |= {name: [-r[name] for r in results] for name in ("non_embedding_params", "flops_per_token")}
    # every predictor as a predicted loss (lower = better), so +1 means the full runs' exact order
    table = {name: {"kendall_tau": kendall_tau(p, full), "spearman_rho": spearman_rho(p, full)}
             for name, p in predictors.items()}
    score = "proxy_extrapolated" if args.extrapolate and "proxy_extrapolated" in predictors else "proxy"
    proxy_winner = min(results, key=lambda r: predictors[score][results.index(r)])
    full_rank = sorted(full).index(proxy_winner["full"]) + 1
    total = time.perf_counter() - started
    summary = {"preset": preset, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "proxy_lr": proxy_search.lr, "proxy_muon_lr": proxy_search.muon_lr,
               "val_split_tokens": data.val_tokens, "budgets": budgets, "shapes": results, "correlations": table,
               "score": score, "proxy_winner": proxy_winner["name"], "proxy_winner_full_rank": full_rank,
               "wall_s": round(total, 1), "load_end": os.getloadavg()[0]}
    (out / "search_validity.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'predictor of the full-budget loss':<36}{'kendall_tau':>12}{'spearman_rho':>14}")
    for name, c in table.items():
        print(f"{name:<36}{c['kendall_tau']:>12.3f}{c['spearman_rho']:>14.3f}")
    print(f"the search's winner by {score} ({proxy_winner['name']}) ranks {full_rank} of {len(results)} after full "
          f"training; whole run {total / 60:.1f} min, load {os.getloadavg()[0]:.1f}")
    print(f"kendall_tau: {table[score]['kendall_tau']:.3f}")


if __name__ == "__main__":
    main()
