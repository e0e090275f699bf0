"""Does the search's winner beat the hand-picked layout in a real run? Search, then train both at the `tiny` budget.

1. ``codenas search`` (``run_search``) under the parameter count of ``configs/tiny_modern.json`` (with this
   tokenizer), at the tiny preset's context length (losses at different context lengths do not compare), with
   the proxy that ``benchmarks/search_validity.py`` measured (``--batch-size 4``, ``--budget-tokens 20480``, the
   search's learning rates), evaluated on the same number of held-out tokens as the final runs
   (``--search-eval-batches 48``), and the search's defaults otherwise (its space, ``--trials 20``, Hyperband,
   trials scored by the proxy's loss; ``--extrapolate-to`` to score them by the extrapolated loss instead).
2. The winner (``best_arch.json``, with the optimizer its trial used) and ``tiny_modern`` (with the tiny preset's
   Muon) are each pretrained at the tiny preset's full budget (its ``max_steps``, ``batch_size``, learning rates,
   warmup and decay) on the same tokens, for each of ``--seeds`` (same initialisation stream and batch order for
   both models under one seed).

Printed: the search's summary, one line per run, the table (val loss per seed, mean); the last line is
``searched_minus_tiny_modern: X``, the difference of the mean final val losses (negative: the search won).
Everything also goes to ``OUT/search_transfer.json``. The data come from ``benchmarks/search_validity.py``'s
``benchmark_data`` (the stdlib sample of the tiny preset, 5% of its documents held out), the one place to change
for another corpus; both models are scored on the same ``--val-tokens`` held-out tokens.

    nice python benchmarks/search_transfer.py --threads 1     # ~20 min on one core (search, 4 runs of 2.5M tokens)
    # another search setting against the same tiny_modern runs (only the search and its winner train):
    nice python benchmarks/search_transfer.py --threads 1 --budget-tokens 163840 --out runs/st_long \
        --hand-from runs/search_transfer/search_transfer.json
    python benchmarks/search_transfer.py --smoke              # seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

PRESETS = {
    "default": {"trials": 20, "budget_tokens": 20_480, "batch_size": 4, "search_eval_batches": 48, "max_steps": None,
                "seeds": "1337,1338", "vocab_size": 2048, "max_files": 300, "val_fraction": 0.05,
                "val_tokens": 50_000},
    "smoke": {"trials": 2, "budget_tokens": 512, "batch_size": 2, "search_eval_batches": 1, "max_steps": 4,
              "seeds": "1", "vocab_size": 300, "max_files": 12, "val_fraction": 0.2, "val_tokens": 256},
}


def _validity_module():
    path = Path(__file__).resolve().parent / "search_validity.py"
    spec = importlib.util.spec_from_file_location("search_validity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# the arguments tiny_modern's final runs depend on: earlier runs are reused only when these are equal
HAND_RUN_ARGS = ("max_steps", "vocab_size", "max_files", "val_fraction", "val_tokens", "dtype", "device")


def _hand_runs(path: Path, args: dict, seeds: list[int], validity) -> dict[int, dict]:
    """tiny_modern's runs of an earlier ``search_transfer.json`` by seed, after checking they were trained alike."""
    earlier = json.loads(Path(path).read_text())
    diffs = validity.arg_differences(earlier["args"], args, HAND_RUN_ARGS)
    runs = {r["seed"]: r for r in earlier["runs"] if r["model"] == "tiny_modern"}
    if diffs or any(seed not in runs for seed in seeds):
        raise SystemExit(f"{path}: its tiny_modern runs were trained otherwise or lack a seed ({'; '.join(diffs)})")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="Seconds: a 2-trial search, 4-step runs, one seed.")
    parser.add_argument("--trials", type=int, help="Shapes the search trains [10].")
    parser.add_argument("--budget-tokens", type=int, help="The search's proxy budget [20,480: the one "
                                                          "benchmarks/search_validity.py measured].")
    parser.add_argument("--batch-size", type=int, help="The search's --batch-size [4, as search_validity.py].")
    parser.add_argument("--search-eval-batches", type=int,
                        help="The search's --eval-batches [48: the final runs' held-out tokens].")
    parser.add_argument("--search-lr", type=float, default=None, help="The search's --lr [its default].")
    parser.add_argument("--search-muon-lr", type=float, default=None, help="The search's --muon-lr [its default].")
    parser.add_argument("--extrapolate-to", type=int, default=0,
                        help="The search's --extrapolate-to: score trials by their loss extrapolated to this many "
                             "tokens (the final runs' are printed) [0: by the proxy's loss, the search's default].")
    parser.add_argument("--hand-from", type=Path, default=None,
                        help="Take tiny_modern's runs from this earlier search_transfer.json (same seeds, steps and "
                             "data; checked) instead of training them again.")
    parser.add_argument("--max-steps", type=int, help="Steps of each final run [the tiny preset's].")
    parser.add_argument("--seeds", help="Seeds of the final runs, comma-separated [1337,1338].")
    parser.add_argument("--vocab-size", type=int, help="Tokenizer size [2048, the tiny preset's].")
    parser.add_argument("--max-files", type=int, help="Stdlib files of the corpus [300, the tiny preset's].")
    parser.add_argument("--val-tokens", type=int, help="Held-out tokens the final runs are scored on [50,000].")
    parser.add_argument("--val-fraction", type=float, help="Share of the corpus's documents held out [0.05].")
    parser.add_argument("--dtype", default="fp32", help="Training dtype of every run: fp32 (fast on CPUs), bf16, auto.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default].")
    parser.add_argument("--out", type=Path, default=None, help="Output folder [runs/search_transfer[_smoke]].")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    preset = "smoke" if args.smoke else "default"
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = args.out or Path("runs") / ("search_transfer" if preset == "default" else "search_transfer_smoke")

    import torch

    from codenas.model.config import ArchConfig, load_arch
    from codenas.model.tokenizer import load_tokenizer
    from codenas.progress import set_quiet
    from codenas.run.config import load_run_config
    from codenas.search.space import SearchSpace, count_params
    from codenas.search.study import SearchConfig, run_search
    from codenas.settings import PretrainSettings, TrainSettings
    from codenas.train.pretrain import pretrain

    set_quiet(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    out.mkdir(parents=True, exist_ok=True)
    validity = _validity_module()
    data = validity.benchmark_data(out, args.vocab_size, args.max_files, args.val_fraction, args.val_tokens)
    vocab = load_tokenizer(data.tokenizer).get_vocab_size()
    preset_cfg = load_run_config("tiny")
    recipe = preset_cfg["pretrain"]
    hand = dataclasses.replace(load_arch(recipe["arch"]), vocab_size=vocab)
    if args.smoke:  # a smaller hand-picked shape and space, for seconds
        hand = dataclasses.replace(hand, n_layer=1, d_model=32, n_head=2, n_kv_head=2, d_ff=64, context_length=32)
    space = SearchSpace(context_length=(hand.context_length,))
    if args.smoke:
        space = SearchSpace(n_layer=(1, 2), n_head=(2,), d_model=(16, 32), d_ff_ratio=(2,),
                            context_length=(hand.context_length,))
    budget = count_params(hand)
    steps = args.max_steps or recipe["max_steps"]
    final_tokens = steps * recipe["batch_size"] * hand.context_length
    started = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; search under "
          f"{budget:,} parameters (tiny_modern's), {args.trials} shapes x {args.budget_tokens:,} tokens; the final "
          f"runs train {final_tokens:,} tokens", flush=True)
    search = run_search(SearchConfig(out=out / "search", max_params=budget, trials=args.trials,
                                     budget_tokens=args.budget_tokens, tokenizer=data.tokenizer, corpus=data.corpus,
                                     space=space, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                                     eval_batches=args.search_eval_batches, extrapolate_to=args.extrapolate_to,
                                     **{k: v for k, v in (("lr", args.search_lr), ("muon_lr", args.search_muon_lr))
                                        if v is not None}))
    best = search["best"]
    winner = dataclasses.replace(ArchConfig.from_json(out / "search" / "best_arch.json"), name="searched")
    print(f"search: {search['counts']}, winner trial {best['trial']} ({winner.n_layer}L d{winner.d_model} "
          f"ff{winner.d_ff} h{winner.n_head}/kv{winner.n_kv_head} {winner.position}/{winner.norm}/{winner.mlp}"
          f"{'/qk' if winner.qk_norm else ''} drop{winner.dropout:g}, {best['optimizer']}, {best['params']:,} params, "
          f"proxy val loss {best['val_loss']:.4f}); {(time.perf_counter() - started) / 60:.1f} min", flush=True)

    models = {"searched": (winner, best["optimizer"]), "tiny_modern": (hand, recipe["optimizer"])}
    seeds = [int(s) for s in args.seeds.split(",")]
    earlier = _hand_runs(args.hand_from, vars(args), seeds, validity) if args.hand_from else {}
    runs = []
    for seed in seeds:
        for name, (arch, optimizer) in models.items():
            if name == "tiny_modern" and earlier:
                runs.append(earlier[seed])
                print(f"tiny_modern seed {seed}: val loss {earlier[seed]['final_val_loss']:.4f} (from "
                      f"{args.hand_from})", flush=True)
                continue
            training = TrainSettings(max_steps=steps, batch_size=recipe["batch_size"], lr=recipe["lr"],
                                     min_lr=recipe["min_lr"], warmup_steps=min(recipe["warmup_steps"], steps // 2),
                                     eval_interval=steps, eval_batches=validity.eval_batches_for(
                                         args.val_tokens, recipe["batch_size"], arch.context_length),
                                     log_interval=recipe["log_interval"], seed=seed, dtype=args.dtype,
                                     device=args.device, optimizer=optimizer, muon_lr=recipe["muon_lr"],
                                     weight_decay=recipe["weight_decay"])
            start = time.perf_counter()
            result = pretrain(settings=PretrainSettings(arch=name), training=training,
                              arch=arch, tokenizer=data.tokenizer, corpus=data.corpus, out=out / f"{name}_seed{seed}",
                              save_checkpoints=False, desc=f"{name} seed {seed}")
            runs.append({"model": name, "seed": seed, "optimizer": optimizer, "params": result["params"],
                         "tokens": result["tokens"], "final_val_loss": result["final_val_loss"],
                         "wall_s": round(time.perf_counter() - start, 1)})
            print(f"{name} seed {seed} ({optimizer}, {result['params']:,} params): val loss "
                  f"{result['final_val_loss']:.4f} after {result['tokens']:,} tokens, {runs[-1]['wall_s']:.0f} s",
                  flush=True)

    means = {name: sum(r["final_val_loss"] for r in runs if r["model"] == name) / len(seeds) for name in models}
    summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "max_params": budget, "winner": winner.to_dict(), "winner_trial": best, "runs": runs,
               "mean_val_loss": means, "wall_s": round(time.perf_counter() - started, 1),
               "load_end": os.getloadavg()[0]}
    (out / "search_transfer.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'model':<14}" + "".join(f"{'seed ' + str(s):>12}" for s in seeds) + f"{'mean':>10}")
    for name in models:
        losses = [r["final_val_loss"] for r in runs if r["model"] == name]
        print(f"{name:<14}" + "".join(f"{v:>12.4f}" for v in losses) + f"{means[name]:>10.4f}")
    print(f"whole run {(time.perf_counter() - started) / 60:.1f} min, load {os.getloadavg()[0]:.1f}")
    print(f"searched_minus_tiny_modern: {means['searched'] - means['tiny_modern']:.4f}")


if __name__ == "__main__":
    main()
