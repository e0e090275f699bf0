"""``corpus build``: sources -> filters -> decontamination -> exact and near dedup -> tokenizer -> token shards.

The work runs as datatrove pipelines, each cut into ``settings.tasks`` tasks run by ``settings.workers``
processes on this machine, or on a Ray or Slurm cluster (``settings.executor``, see ``codenas.corpus.executor``):

1. read every source, filter, decontaminate -> ``filtered/<rank>.jsonl.gz`` + exact-dedup signatures
2. find exact duplicates (content hash)                    3. drop them -> ``unique/`` + MinHash signatures
4. MinHash LSH buckets   5. clusters of near duplicates    6. drop all but one of each -> ``clean/``
   (and count the split: with two clean documents or more, at least one goes to val, see ``codenas.corpus.shards``)
7. (with ``vocab_size``) train the BPE on a sample of the clean training documents
8. tokenize -> ``train-<rank>.bin`` / ``val-<rank>.bin``

Everything is built in ``.<OUT>.building/`` beside ``OUT``; a killed build resumes there (datatrove skips the
tasks it finished) as long as its inputs and settings are the same, else it starts over. The finished folder
(``manifest.json``, ``tokenizer.json``, ``shards/``) is swapped into ``OUT`` in one rename, so ``OUT`` is
complete or absent. A rebuild with the same key finds ``OUT`` done and returns its manifest. A build holds the
lock of its work folder, and first ends any worker a killed build of the same folder left running.

Every other way into pretraining data goes through here too: ``build_cached`` builds sources (a folder of ``.py``
files is one more source) into a content-keyed folder of the cache for `train pretrain --corpus SOURCE`,
`tokenizer train` and `search`, and ``tokenizer_from_sources`` is the tokenizer such a build trains.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import codenas
from codenas.corpus.executor import PID_FILE, check_executor, end_leftovers, run_in_group, run_stage
from codenas.corpus.filters import FILTERS
from codenas.corpus.sources import Source, listing_digest, reader_for, resolve_sources
from codenas.io import (
    LOCK_FILE,
    CodenasError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_writable,
    output_lock,
    read_json,
    read_jsonl,
    sha256_bytes,
    sha256_file,
)
from codenas.model.tokenizer import TOKENIZER_FILE
from codenas.names import FORCED_VAL, MANIFEST
from codenas.paths import cache_dir
from codenas.progress import say
from codenas.settings import CorpusSettings

MANIFEST_FORMAT = "codenas-corpus/1"
DEFAULT_VOCAB_SIZE = 8192
DEDUP_RULES = ("exact_duplicate", "near_duplicate")
RULES = (*(f.name for f in FILTERS), *DEDUP_RULES)  # pipeline order: the filters, then the two dedup passes
READ = "read"  # the tally of what the sources gave, before any rule
MINHASH_NGRAMS = 5
MINHASH_HASHES = 112  # bands x rows, chosen from this for the threshold


def minhash_bands(threshold: float, num_perm: int = MINHASH_HASHES) -> tuple[int, int]:
    """(bands, rows per band) with bands x rows <= ``num_perm`` minimising the weighted false positive and false
    negative areas around ``threshold`` (the usual LSH parameter choice; the S-curve is 1 - (1 - s^r)^b)."""
    grid = [i / 200 for i in range(201)]

    def area(f, lo: float, hi: float) -> float:
        xs = [x for x in grid if lo <= x <= hi]
        return sum(f(x) for x in xs) * (hi - lo) / max(len(xs), 1)

    best, best_err = (1, 1), math.inf
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = area(lambda s, b=b, r=r: 1 - (1 - s**r) ** b, 0.0, threshold)
            fn = area(lambda s, b=b, r=r: (1 - s**r) ** b, threshold, 1.0)
            if fp + fn < best_err:
                best, best_err = (b, r), fp + fn
    return best


def _quiet_datatrove() -> None:
    """datatrove logs every task at INFO on stderr; keep its warnings only (task logs stay in logs/)."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{message}")


def build_key(sources: list[Source], settings: CorpusSettings, tokenizer_sha: str | None, vocab_size: int | None,
              benchmarks: dict) -> str:
    """What decides the output: the inputs' listing, the settings, the tokenizer, the benchmarks, the version."""
    payload = {"inputs": listing_digest(sources), "settings": settings.output_settings(),
               "tokenizer": tokenizer_sha, "vocab_size": vocab_size, "benchmarks": benchmarks,
               "codenas": codenas.__version__, "format": MANIFEST_FORMAT}
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


@dataclass
class BuildPlan:
    """Everything a build does, decided before any work: the key of its inputs and settings, the work folder,
    and the datatrove stages as ``(name, pipeline, tasks)`` (run in order; each one's task logs and completion
    markers live in ``work/logs/<name>``). ``tokenize`` (the last stage) needs ``work/tokenizer.json``."""

    out: Path
    work: Path
    key: str
    sources: list[Source]
    settings: CorpusSettings
    tokenizer: Path | None
    vocab_size: int | None
    benchmarks: dict
    stages: list[tuple[str, list, int]]


def plan_build(sources: list[str], out: Path, *, tokenizer: Path | None = None, vocab_size: int | None = None,
               settings: CorpusSettings | None = None, benchmarks: Sequence[str | os.PathLike[str]] = (),
               mbpp: Path | None = None) -> BuildPlan:
    """Resolve the sources and benchmarks, compute the key and prepare ``.<out>.building/`` (kept when it holds
    an interrupted build with the same key, else started over). See ``build_corpus`` for the arguments."""
    from codenas.data.benchmarks import decontamination_records, reference_texts

    settings = settings or CorpusSettings()
    check_executor(settings.executor)
    if tokenizer is not None and vocab_size is not None:
        raise CodenasError("give --tokenizer or --vocab-size, not both")
    if tokenizer is None and vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE
    if vocab_size is not None and vocab_size < 258:
        raise CodenasError(f"--vocab-size must be at least 258 (specials + 256 bytes), got {vocab_size}")
    out = Path(out)
    _check_out(out)
    tokenizer_sha = None
    if tokenizer is not None:
        from codenas.model.tokenizer import load_tokenizer, tokenizer_file

        load_tokenizer(tokenizer)
        tokenizer = tokenizer_file(tokenizer)
        tokenizer_sha = sha256_file(tokenizer)
    resolved = resolve_sources(list(sources), settings.max_files)
    skipped = [f"{s.name}/{rel} ({why})" for s in resolved for rel, why in s.skipped]
    if skipped:
        say(f"corpus: skipping {len(skipped)} unreadable file(s): {', '.join(skipped[:5])}"
            + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
    bench_records, bench_counts = (decontamination_records(list(benchmarks), mbpp) if settings.decontaminate
                                   else ([], {}))
    bench_texts = [(r.id, text) for r in bench_records for text in reference_texts(r)]
    bench_digest = sha256_bytes("\n".join(f"{i}\t{text}" for i, text in bench_texts).encode())
    key = build_key(resolved, settings, tokenizer_sha, vocab_size, {"counts": bench_counts, "sha256": bench_digest})
    work = work_folder(out)
    plan = BuildPlan(out, work, key, resolved, settings, tokenizer, vocab_size, bench_counts, [])
    if _is_built(out, key):
        return plan
    if work.exists() and not _same_key(work, key) and any(p.name not in (LOCK_FILE, PID_FILE) for p in work.iterdir()):
        say(f"corpus: inputs or settings changed since the interrupted build in {work}: starting over")
        _empty(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / "key", key + "\n")
    if tokenizer is not None:
        _prepare_tokenizer(plan)
    plan.stages = corpus_stages(work, resolved, settings, bench_texts)
    return plan


def work_folder(out: Path) -> Path:
    """Where the corpus of ``out`` is built: ``.<name>.building`` beside it."""
    return Path(out).parent / f".{Path(out).name}.building"


def _empty(work: Path) -> None:
    """Remove everything in ``work`` but its lock file (held by this build) and its process group's marker."""
    for entry in work.iterdir():
        if entry.name in (LOCK_FILE, PID_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _holding_work_lock(build):
    """Run ``build`` holding the lock of the work folder of its ``out``, after ending what a killed build of
    that folder left running; with the local executor, in a child process whose workers end with this process
    (``executor.run_in_group``). A work folder created only for the lock is removed again. ``wait=True`` waits
    for another process building the same folder (the cache's entries) instead of failing."""
    @functools.wraps(build)
    def locked(sources: list[str], out: Path, *, wait: bool = False, **kwargs) -> dict:
        work = work_folder(out)
        created = not work.exists()
        settings = kwargs.get("settings") or CorpusSettings()
        waiting = (lambda pid: say(f"corpus: {out} is being built by another process (pid {pid}); waiting for it")) \
            if wait else None
        with output_lock(work, wait=waiting):
            try:
                end_leftovers(work)
                if settings.executor != "local":
                    return build(sources, out, **kwargs)
                timings = kwargs.get("timings")
                manifest, child_timings = run_in_group(
                    work, lambda: (build(sources, out, **kwargs), timings),
                    interrupted=f"corpus: interrupted; run the same command again to resume (finished tasks are kept "
                                f"in {work})")
                if timings is not None:
                    timings.update(child_timings)
                return manifest
            finally:
                if created and work.is_dir() and all(p.name == LOCK_FILE for p in work.iterdir()):
                    shutil.rmtree(work, ignore_errors=True)
    return locked


@_holding_work_lock
def build_corpus(sources: list[str], out: Path, *, tokenizer: Path | None = None, vocab_size: int | None = None,
                 settings: CorpusSettings | None = None, benchmarks: Sequence[str | os.PathLike[str]] = (),
                 mbpp: Path | None = None, timings: dict[str, float] | None = None, keep_work: bool = False) -> dict:
    """Build the corpus of ``sources`` into ``out`` and return its manifest (also ``out/manifest.json``).

    Give ``tokenizer`` (a tokenizer.json) or ``vocab_size`` (a BPE is trained on the filtered corpus; the
    default when neither is given: 8192). ``benchmarks`` are extra record files to decontaminate against,
    besides every benchmark codenas knows; ``mbpp`` is the MBPP file (else found the usual way). ``timings``
    (if given) receives the seconds of each stage; ``keep_work`` leaves the work folder (clean documents,
    task logs) in place for inspection and benchmarks.
    """
    plan = plan_build(sources, out, tokenizer=tokenizer, vocab_size=vocab_size, settings=settings,
                      benchmarks=benchmarks, mbpp=mbpp)
    if _is_built(plan.out, plan.key):
        say(f"corpus: {plan.out} is already built from the same inputs and settings")
        return read_json(plan.out / MANIFEST)
    resuming = (plan.work / "logs").exists()
    say(f"corpus: {'resuming' if resuming else 'building'} {plan.out} from {len(plan.sources)} file groups "
        f"({sum(len(s.files) for s in plan.sources):,} files) in {plan.work}")
    _quiet_datatrove()
    workers = plan.settings.workers or os.cpu_count() or 1
    timings = {} if timings is None else timings
    for name, pipeline, tasks in plan.stages:
        if name == "tokenize":
            start = time.perf_counter()
            _decide_split(plan)
            _prepare_tokenizer(plan)
            timings["tokenizer"] = time.perf_counter() - start
        at_once = f"{min(workers, tasks)} at once" if plan.settings.executor == "local" else \
            f"on {plan.settings.executor.capitalize()}"
        say(f"corpus: {name} ({tasks} tasks, {at_once})")
        start = time.perf_counter()
        try:
            run_stage(plan.settings.executor, plan.work, name, pipeline, tasks, plan.settings.workers or None)
        except KeyboardInterrupt:
            say(f"corpus: interrupted; run the same command again to resume (finished tasks are kept in "
                f"{plan.work})")
            raise
        timings[name] = time.perf_counter() - start
    manifest = _manifest(plan)
    _install(plan.work / "final", plan.out)
    if not keep_work:
        shutil.rmtree(plan.work, ignore_errors=True)
    say("corpus: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return manifest


def _is_built(out: Path, key: str) -> bool:
    return (out / MANIFEST).is_file() and read_json(out / MANIFEST).get("key") == key


def is_built_corpus(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``codenas corpus build``."""
    manifest = Path(path) / MANIFEST
    return manifest.is_file() and read_json(manifest).get("format") == MANIFEST_FORMAT


def _check_out(out: Path) -> None:
    """Never replace a folder that is not a corpus (the user's data)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise CodenasError("exists and is not a corpus folder (no manifest.json): choose another --out", out)
    if (out / MANIFEST).is_file() and read_json(out / MANIFEST).get("format") != MANIFEST_FORMAT:
        raise CodenasError("holds a manifest.json that is not a codenas corpus manifest", out)


def _same_key(work: Path, key: str) -> bool:
    return (work / "key").is_file() and (work / "key").read_text().strip() == key


def _decide_split(plan: BuildPlan) -> None:
    """Write ``work/forced_val.json`` when the hash put none of two or more clean documents in val."""
    from codenas.corpus.shards import fallback_val

    forced = fallback_val(plan.work / "split", plan.settings.tasks)
    path = plan.work / FORCED_VAL
    if forced is None:
        path.unlink(missing_ok=True)
        return
    say(f"corpus: no document fell in the validation share ({plan.settings.val_fraction:g}); {forced} goes to "
        "validation so that it is not empty")
    atomic_write_json(path, {"id": forced})


def _prepare_tokenizer(plan: BuildPlan) -> None:
    """``work/tokenizer.json``: a copy of the given tokenizer, or one trained on the clean training documents."""
    path = plan.work / TOKENIZER_FILE
    if path.is_file():
        return
    if plan.tokenizer is not None:
        shutil.copyfile(plan.tokenizer, plan.work / "tokenizer.json.tmp")
        os.replace(plan.work / "tokenizer.json.tmp", path)
    else:
        assert plan.vocab_size is not None  # plan_build sets one of tokenizer and vocab_size
        say(f"corpus: training a {plan.vocab_size}-token BPE on up to {plan.settings.tokenizer_sample_bytes:,} "
            "bytes of clean training documents")
        _train_tokenizer(plan.work, plan.settings, plan.vocab_size, path)


def corpus_stages(work: Path, sources: list[Source], settings: CorpusSettings,
                  benchmarks: list[tuple[str, str]]) -> list[tuple[str, list, int]]:
    """The datatrove stages of a build in ``work``: ``(name, pipeline steps, tasks)`` in run order.

    ``benchmarks`` are (problem id, text) pairs to decontaminate against. The steps write with local file APIs,
    so on a cluster ``work`` is a shared filesystem (NFS, Lustre) that every node mounts at the same path.
    """
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.exact_dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    from codenas.corpus.filters import CodeWordTokenizer, Tally
    from codenas.corpus.shards import RankReader, RankWriter, SplitCounter, TokenizeShards

    s, T = settings, settings.tasks
    tally = lambda name: Tally(str(work / "tally" / name))  # noqa: E731
    exact = ExactDedupConfig(content_getter=_content, hash_config=HashConfig(precision=64, hash_fc="sha1"))
    bands, rows = minhash_bands(s.near_threshold)
    minhash = MinhashConfig(n_grams=MINHASH_NGRAMS, num_buckets=bands, hashes_per_bucket=rows, seed=s.seed,
                            norm_config=TextNormConfig(lowercase=False, remove_punctuation=False,
                                                       norm_unicode_diacritics=False, norm_numbers=False),
                            hash_config=HashConfig(precision=64, hash_fc="sha1"))
    paths_dir = work / "sources"
    paths_dir.mkdir(parents=True, exist_ok=True)
    readers = []
    for i, source in enumerate(sources):
        paths = paths_dir / f"{i:03d}.txt"
        atomic_write_text(paths, "".join(f + "\n" for f in source.files))
        readers.append(reader_for(source, paths, s.text_field))

    stages: list[tuple[str, list, int]] = []
    first = [*readers, tally(READ)]
    for rule in FILTERS:
        first += ([rule.make(s, benchmarks, str(work))] if rule.enabled(s, benchmarks) else []) + [tally(rule.name)]
    first.append(RankWriter(str(work / "filtered")))
    if s.dedup_exact:
        first.append(ExactDedupSignature(str(work / "exact_sigs"), config=exact))
    stages.append(("read and filter", first, T))
    if s.dedup_exact:
        stages.append(("exact duplicates",
                       [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), config=exact)], 1))
    third = [RankReader(str(work / "filtered"))]
    third += [ExactDedupFilter(str(work / "exact_dups"), config=exact)] if s.dedup_exact else []
    third += [tally("exact_duplicate"), RankWriter(str(work / ("unique" if s.dedup_near else "clean")))]
    split_counter = SplitCounter(str(work / "split"), s.val_fraction, s.seed)
    if s.dedup_near:
        third.append(MinhashDedupSignature(str(work / "mh_sigs"), config=minhash, language=CodeWordTokenizer()))
    else:
        third.append(split_counter)
    stages.append(("drop exact duplicates", third, T))
    if s.dedup_near:
        stages.append(("near duplicates: LSH buckets",
                       [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"), config=minhash)], bands))
        stages.append(("near duplicates: clusters",
                       [MinhashDedupCluster(str(work / "mh_buckets"), str(work / "mh_clusters"), config=minhash)], 1))
        stages.append(("drop near duplicates",
                       [RankReader(str(work / "unique")), MinhashDedupFilter(str(work / "mh_clusters")),
                        tally("near_duplicate"), RankWriter(str(work / "clean")), split_counter], T))
    stages.append(("tokenize", [RankReader(str(work / "clean")),
                                TokenizeShards(str(work / "tokens"), str(work / TOKENIZER_FILE), s.val_fraction,
                                               s.seed, str(work / FORCED_VAL))], T))
    return stages


def _content(doc) -> str:
    return doc.text


def _train_tokenizer(work: Path, s: CorpusSettings, vocab_size: int, out: Path) -> None:
    """A BPE trained on the clean training documents, read task by task up to the byte budget."""
    from codenas.corpus.shards import is_val, read_forced_val, read_rank_file
    from codenas.model.tokenizer import train_tokenizer_on_texts

    forced = read_forced_val(work / FORCED_VAL)

    def texts():
        budget = s.tokenizer_sample_bytes
        for rank in range(s.tasks):
            for doc in read_rank_file(work / "clean" / f"{rank:05d}.jsonl.gz"):
                if is_val(doc.id, s.val_fraction, s.seed, forced):
                    continue
                budget -= len(doc.text.encode("utf-8", errors="surrogatepass"))
                if budget < 0:
                    return
                yield doc.text

    train_tokenizer_on_texts(list(texts()), vocab_size, out)


def _read_tallies(work: Path) -> dict[str, dict[str, dict[str, int]]]:
    """tally name (a rule's, or ``read``) -> source -> {docs, bytes}, summed over tasks."""
    result: dict[str, dict[str, dict[str, int]]] = {}
    for folder in sorted((work / "tally").iterdir()):
        # a build interrupted before tallies were named by rule alone wrote "<position>-<rule>" folders
        name = folder.name.split("-", 1)[1] if folder.name[:1].isdigit() else folder.name
        totals = result.setdefault(name, {})
        for f in sorted(folder.glob("*.json")):
            for source, c in read_json(f).items():
                entry = totals.setdefault(source, {"docs": 0, "bytes": 0})
                entry["docs"] += c["docs"]
                entry["bytes"] += c["bytes"]
    return result


def _manifest(plan: BuildPlan) -> dict:
    """Move the shards and the tokenizer into ``work/final`` and write its manifest."""
    work, sources, settings, key = plan.work, plan.sources, plan.settings, plan.key
    bench_counts, vocab_size = plan.benchmarks, plan.vocab_size
    from codenas.corpus.shards import read_forced_val, token_dtype
    from codenas.model.tokenizer import load_tokenizer

    final = work / "final"
    if final.exists():
        shutil.rmtree(final)
    (final / "shards").mkdir(parents=True)
    tallies = _read_tallies(work)
    rules = [*(f.name for f in FILTERS), *DEDUP_RULES]
    order = [t for t in (READ, *rules) if t in tallies]  # pipeline order; a dedup pass that did not run has none
    per_source: dict[str, dict] = {}
    for s in sources:
        entry = per_source.setdefault(s.name, {"files": 0, "unreadable": []})
        entry["files"] += len(s.files)
        entry["unreadable"] += [{"file": rel, "reason": why} for rel, why in s.skipped]
    zero = {"docs": 0, "bytes": 0}
    rules_total = {rule: dict(zero) for rule in rules}
    for name, entry in per_source.items():
        seen = [tallies[t].get(name, zero) for t in order]
        entry["in"] = seen[0]
        entry["dropped"] = {}
        for rule, before, after in zip(order[1:], seen, seen[1:], strict=False):
            dropped = {"docs": before["docs"] - after["docs"], "bytes": before["bytes"] - after["bytes"]}
            entry["dropped"][rule] = dropped
            rules_total[rule]["docs"] += dropped["docs"]
            rules_total[rule]["bytes"] += dropped["bytes"]
        entry["out"] = seen[-1]
    contaminated = {}
    for f in sorted((work / "contaminated").glob("*.jsonl")) if (work / "contaminated").is_dir() else []:
        for _, row in read_jsonl(f):
            contaminated[row["doc"]] = row["benchmark"]
    tok = load_tokenizer(work / TOKENIZER_FILE)
    shutil.copyfile(work / TOKENIZER_FILE, final / TOKENIZER_FILE)
    dtype = token_dtype(tok.get_vocab_size())
    shards, tokens, docs, chars = [], {"train": 0, "val": 0}, {"train": 0, "val": 0}, {"train": 0, "val": 0}
    for rank in range(settings.tasks):
        counts = read_json(work / "tokens" / f"{rank:05d}.json")
        for split in ("train", "val"):
            tokens[split] += counts[split]["tokens"]
            docs[split] += counts[split]["docs"]
            chars[split] += counts[split]["chars"]
            if counts[split]["tokens"]:
                name = f"shards/{split}-{rank:05d}.bin"
                os.replace(work / "tokens" / f"{split}-{rank:05d}.bin", final / name)
                shards.append({"file": name, "split": split, "tokens": counts[split]["tokens"],
                               "documents": counts[split]["docs"], "sha256": sha256_file(final / name)})
    if not tokens["train"]:
        raise CodenasError("no training documents are left after filtering and deduplication (see the counts "
                           f"in {work}/tally): add sources or relax the filters")
    manifest = {
        "format": MANIFEST_FORMAT,
        "key": key,
        "sources": per_source,
        "rules": rules_total,
        "contaminated": dict(sorted(contaminated.items())),
        "benchmarks": bench_counts,
        "documents": docs,
        "tokens": tokens,
        "characters": chars,
        "forced_val": read_forced_val(work / FORCED_VAL),
        "dtype": dtype.name,
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256_file(final / TOKENIZER_FILE),
                      "vocab_size": tok.get_vocab_size(), "trained_here": vocab_size is not None},
        "settings": settings.output_settings(),
        "minhash": dict(zip(("bands", "rows", "ngrams"), (*minhash_bands(settings.near_threshold), MINHASH_NGRAMS),
                            strict=True)),
        "shards": shards,
    }
    atomic_write_json(final / MANIFEST, manifest)
    return manifest


def _install(final: Path, out: Path) -> None:
    """Swap the finished folder in: the old corpus (if any) is renamed aside first and removed last."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(final, out)
    if old is not None:
        shutil.rmtree(old)


def corpus_summary(manifest: dict) -> list[str]:
    """Lines for the terminal: per-source counts, then the tokens and shards, and last the split."""
    lines = []
    for name, s in manifest["sources"].items():
        dropped = ", ".join(f"{rule} {c['docs']}" for rule, c in s["dropped"].items() if c["docs"])
        unreadable = f"; {len(s['unreadable'])} unreadable files skipped" if s.get("unreadable") else ""
        lines.append(f"{name}: {s['in']['docs']:,} documents ({s['in']['bytes']:,} bytes) in, "
                     f"{s['out']['docs']:,} ({s['out']['bytes']:,} bytes) kept; dropped: {dropped or 'none'}"
                     f"{unreadable}")
    lines.append(f"{manifest['dtype']} tokens in {len(manifest['shards'])} shards; "
                 f"{len(manifest['contaminated'])} documents dropped as benchmark matches")
    lines.append(split_line(manifest))
    return lines


def split_line(manifest: dict) -> str:
    """The train/validation split of a built corpus in one line (documents and tokens of each)."""
    docs, tokens = manifest["documents"], manifest["tokens"]
    forced = " (the lowest-hash document, since none fell in the validation share)" if manifest.get("forced_val") \
        else ""
    return (f"split: {docs['train']:,} train documents ({tokens['train']:,} tokens), {docs['val']:,} validation "
            f"documents ({tokens['val']:,} tokens){forced}")


def read_manifest(out: Path) -> dict | None:
    """The manifest of the corpus built into ``out``, or None when there is none."""
    path = Path(out) / MANIFEST
    return read_json(path) if path.is_file() else None


def cached_folder(sources: list[str], *, tokenizer: Path | None = None, vocab_size: int | None = None,
                  settings: CorpusSettings | None = None, cache: Path | None = None) -> Path:
    """Where ``build_cached`` builds these sources with this tokenizer (or vocabulary) and settings."""
    settings = settings or CorpusSettings()
    tokenizer_sha = sha256_file(tokenizer) if tokenizer is not None else None
    name = sha256_bytes(json.dumps([sources, tokenizer_sha, vocab_size, settings.output_settings()]).encode())
    return Path(cache or cache_dir() / "corpus-build") / name[:24]


def _local_spec(spec: str) -> str:
    """A source as the cache names it: an existing local path made absolute (the same folder from any cwd)."""
    return spec if "://" in spec or spec in ("stdlib", "site-packages") or not Path(spec).exists() \
        else str(Path(spec).resolve())


def build_cached(sources: list[str], *, tokenizer: Path | None = None, vocab_size: int | None = None,
                 settings: CorpusSettings | None = None, cache: Path | None = None, mbpp: Path | None = None) -> Path:
    """Build ``sources`` (with ``tokenizer``, else a BPE of ``vocab_size`` trained on them) into the cache and
    return the built folder: ``cache_dir()/corpus-build/<name>``, named by the sources, tokenizer and settings.
    A later call with the same arguments finds it built (``build_corpus`` compares the inputs' content key, so
    edited sources rebuild it in place)."""
    from codenas.model.tokenizer import tokenizer_file

    tokenizer = tokenizer_file(tokenizer) if tokenizer is not None else None
    if tokenizer is None and vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE
    specs = [_local_spec(s) for s in sources]
    folder = cached_folder(specs, tokenizer=tokenizer, vocab_size=vocab_size, settings=settings, cache=cache)
    manifest = build_corpus(specs, folder, tokenizer=tokenizer, vocab_size=vocab_size, settings=settings, mbpp=mbpp,
                            wait=True)  # a shared entry: another search or benchmark may be building it
    say(f"corpus: {folder}: {split_line(manifest)}")
    return folder


def tokenizer_from_sources(sources: list[str], vocab_size: int, out: Path, *, settings: CorpusSettings | None = None,
                           cache: Path | None = None) -> dict:
    """The tokenizer a corpus build of ``sources`` trains (a BPE of ``vocab_size`` tokens on its clean training
    documents), copied to ``out``. Returns ``{"path", "vocab_size", "corpus", "train_documents", "val_documents",
    "val_chars_per_token"}`` (characters per token on the validation documents, None without any)."""
    out = Path(out)
    check_writable(out.parent)
    folder = build_cached(sources, vocab_size=vocab_size, settings=settings, cache=cache)
    manifest = read_json(folder / MANIFEST)
    with atomic_path(out) as tmp:
        shutil.copyfile(folder / TOKENIZER_FILE, tmp)
    docs, tokens, chars = manifest["documents"], manifest["tokens"], manifest["characters"]
    val_tokens = tokens["val"] - docs["val"]  # without the <|endoftext|> after each document
    return {"path": str(out), "vocab_size": manifest["tokenizer"]["vocab_size"], "corpus": str(folder),
            "train_documents": docs["train"], "val_documents": docs["val"],
            "val_chars_per_token": chars["val"] / val_tokens if val_tokens > 0 else None}
