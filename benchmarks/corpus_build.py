"""Corpus build throughput: documents, bytes and tokens per second of a full `corpus build` of stdlib +
site-packages on this machine, the per-rule counts, and the speedup of the parallel tokenization stage over one
single-threaded process (the reference, run in the same script on the same clean documents, interleaved rounds,
best of each; every process single-threaded).

    python benchmarks/corpus_build.py                       # stdlib + site-packages, all cores
    python benchmarks/corpus_build.py --max-files 2000      # a deterministic sample per source (quicker)

"Tokens this machine can offer" is the token count of the built corpus (train + val); with --max-files it is
also extrapolated to every file of the sources by the bytes read. The last line is ``build_tokens_per_s: X``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tokenize(work: Path, tasks: int, workers: int, dest: str, val_fraction: float, seed: int) -> float:
    """Seconds for the tokenize stage over ``work/clean`` with ``workers`` single-threaded processes, started from
    a fresh interpreter (process start-up included)."""
    code = f"""
import time
from pathlib import Path
from codenas.corpus.build import _quiet_datatrove, _run
from codenas.corpus.shards import RankReader, TokenizeShards
_quiet_datatrove()
work = Path({str(work)!r})
pipeline = [RankReader(str(work / "clean")),
            TokenizeShards(str(work / {dest!r}), str(work / "tokenizer.json"), {val_fraction}, {seed})]
start = time.perf_counter()
_run(work, {dest!r}, pipeline, {tasks}, {workers})
print(time.perf_counter() - start)
"""
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", default=["stdlib", "site-packages"])
    parser.add_argument("--max-files", type=int, default=0, help="files per source (0: all)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    parser.add_argument("--tasks", type=int, default=0, help="tasks (0: 2 per worker)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of the tokenization comparison")
    parser.add_argument("--out", type=Path, default=None, help="where to build [a temporary folder, removed]")
    args = parser.parse_args()

    from codenas.corpus.build import build_corpus
    from codenas.corpus.sources import resolve_sources
    from codenas.settings import CorpusSettings

    workers = args.workers or os.cpu_count() or 1
    tasks = args.tasks or 2 * workers
    settings = CorpusSettings(max_files=args.max_files or None, workers=workers, tasks=tasks)
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="corpus_bench."))
    out = args.out or tmp / "corpus"
    try:
        listed = resolve_sources(args.sources, 0)
        all_bytes = sum(size for s in listed for size, _ in s.stamps)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
              f"{workers} workers, {tasks} tasks")
        timings: dict[str, float] = {}
        start = time.perf_counter()
        manifest = build_corpus(args.sources, out, vocab_size=args.vocab_size, settings=settings, timings=timings,
                                keep_work=True)
        wall = time.perf_counter() - start
        docs_in = sum(s["in"]["docs"] for s in manifest["sources"].values())
        bytes_in = sum(s["in"]["bytes"] for s in manifest["sources"].values())
        tokens = manifest["tokens"]["train"] + manifest["tokens"]["val"]
        print(f"load average {os.getloadavg()[0]:.2f} after the build")
        print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        for name, s in manifest["sources"].items():
            print(f"{name}: {s['files']:,} files, {s['in']['docs']:,} documents / {s['in']['bytes']:,} bytes in, "
                  f"{s['out']['docs']:,} / {s['out']['bytes']:,} kept")
            for rule, c in s["dropped"].items():
                print(f"  {rule:16s} {c['docs']:>8,} documents {c['bytes']:>14,} bytes")
        matches = manifest["contaminated"]
        print(f"benchmark matches dropped: {len(matches)} {dict(list(matches.items())[:5])}")
        print(f"full build: {wall:.1f} s; {docs_in / wall:,.0f} docs/s, {bytes_in / wall / 1e6:,.2f} MB/s, "
              f"{tokens / wall:,.0f} tokens/s (tokens written)")

        work = out.parent / f".{out.name}.building"
        clean_bytes = sum(s["out"]["bytes"] for s in manifest["sources"].values())
        ones, manys = [], []
        for i in range(args.repeats):  # interleaved, best of each: the machine's load changes under us
            ones.append(_tokenize(work, tasks, 1, f"tokens_one{i}", settings.val_fraction, settings.seed))
            manys.append(_tokenize(work, tasks, workers, f"tokens_many{i}", settings.val_fraction, settings.seed))
            print(f"tokenize round {i + 1}: one process {ones[-1]:.1f} s, {workers} processes {manys[-1]:.1f} s "
                  f"(load average {os.getloadavg()[0]:.2f})")
        one, many = min(ones), min(manys)
        same = all((work / "tokens_one0" / f.name).read_bytes() == f.read_bytes()
                   for f in sorted((work / "tokens_many0").glob("*.bin")))
        print(f"tokenization of {clean_bytes / 1e6:,.1f} MB, best of {args.repeats}: one process {one:.1f} s = "
              f"{tokens / one:,.0f} tokens/s; {workers} processes {many:.1f} s = {tokens / many:,.0f} tokens/s; "
              f"speedup {one / many:.2f}x; identical shards: {same}")
        offer = tokens if not args.max_files else int(tokens * all_bytes / max(bytes_in, 1))
        note = "" if not args.max_files else f" (extrapolated from {bytes_in / 1e6:.0f} of {all_bytes / 1e6:.0f} MB)"
        print(f"tokens this machine can offer from {' + '.join(args.sources)}: {offer:,}{note} "
              f"at vocab {manifest['tokenizer']['vocab_size']}")
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
        print(f"build_tokens_per_s: {tokens / wall:.0f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        elif out.exists():
            shutil.rmtree(out.parent / f".{out.name}.building", ignore_errors=True)


if __name__ == "__main__":
    main()
