"""Token shards: the tokenization step that writes them, the document split, and the memory-mapped view that
training samples windows from.

Each task tokenizes its documents (``<|endoftext|>`` after each) into ``train-<rank>.bin`` and
``val-<rank>.bin``: flat arrays of token ids, uint16 when the vocabulary fits, else uint32. A document goes to
val when a hash of its id (salted with the seed) falls below ``val_fraction``, so the split does not depend on
the order, the task or the other documents. When that puts no document in val although there are two or more
(a small corpus), the one with the lowest hash goes there instead: ``SplitCounter`` counts each task's documents
and notes its lowest hash, and ``fallback_val`` picks the corpus-wide one before tokenization.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from codenas.io import CodenasError, atomic_path, atomic_write_json
from codenas.names import MANIFEST

_BATCH_DOCS = 256


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def split_hash(doc_id: str, seed: int) -> int:
    """A document's stable 64-bit split hash (its id salted with the seed)."""
    digest = hashlib.sha256(f"split:{seed}:{doc_id}".encode("utf-8", errors="surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def is_val(doc_id: str, val_fraction: float, seed: int, forced: str | None = None) -> bool:
    """Whether a document belongs to the validation split: its hash falls below ``val_fraction``, or it is the
    ``forced`` document (``fallback_val``)."""
    return doc_id == forced or split_hash(doc_id, seed) < int(val_fraction * 2**64)


class SplitCounter(PipelineStep):
    """Counts the task's documents and those the hash puts in val, notes the lowest-hash document, writes
    ``folder/<rank>.json`` and passes the documents on."""

    type = "codenas"
    name = "split counter"

    def __init__(self, folder: str, val_fraction: float, seed: int):
        super().__init__()
        self.folder, self.val_fraction, self.seed = folder, val_fraction, seed

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        docs = val = 0
        lowest: tuple[int, str] | None = None
        for doc in data or ():
            h = split_hash(doc.id, self.seed)
            docs += 1
            val += h < int(self.val_fraction * 2**64)
            lowest = min(lowest, (h, doc.id)) if lowest is not None else (h, doc.id)
            yield doc
        atomic_write_json(Path(self.folder) / f"{rank:05d}.json", {"docs": docs, "val": val, "lowest": lowest})


def fallback_val(folder: Path, tasks: int) -> str | None:
    """The id of the document that goes to val although its hash does not put it there: the lowest-hash one, when
    there are two documents or more and none fell in val; else None."""
    from codenas.io import read_json

    counts = [read_json(Path(folder) / f"{rank:05d}.json") for rank in range(tasks)]
    lowest = [tuple(c["lowest"]) for c in counts if c["lowest"] is not None]
    if sum(c["val"] for c in counts) or sum(c["docs"] for c in counts) < 2:
        return None
    return min(lowest)[1]


class RankWriter(PipelineStep):
    """Writes the task's documents (id, source, text) to ``folder/<rank>.jsonl.gz`` (atomically, always, even
    when empty) and passes them on."""

    type = "codenas"
    name = "rank writer"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl.gz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as f:
                for doc in data or ():
                    row = {"id": doc.id, "source": doc.metadata["source"], "text": doc.text}
                    f.write(json.dumps(row, ensure_ascii=False).encode("utf-8", errors="surrogatepass") + b"\n")
                    yield doc


def read_rank_file(path: Path):
    """The documents a ``RankWriter`` wrote, in order."""
    with gzip.open(path, "rb") as f:
        for line in f:
            row = json.loads(line.decode("utf-8", errors="surrogatepass"))
            yield Document(text=row["text"], id=row["id"], metadata={"source": row["source"]})


class RankReader(PipelineStep):
    """Reads back ``folder/<rank>.jsonl.gz`` (what a ``RankWriter`` of the same task wrote)."""

    type = "codenas"
    name = "rank reader"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        yield from read_rank_file(Path(self.folder) / f"{rank:05d}.jsonl.gz")


class TokenizeShards(PipelineStep):
    """Tokenizes the task's documents into ``folder/train-<rank>.bin`` and ``folder/val-<rank>.bin`` and writes
    their token and document counts to ``folder/<rank>.json``."""

    type = "codenas"
    name = "tokenize"

    def __init__(self, folder: str, tokenizer: str, val_fraction: float, seed: int, forced_val_file: str | None = None):
        super().__init__()
        self.folder, self.tokenizer = folder, tokenizer
        self.val_fraction, self.seed = val_fraction, seed
        self.forced_val_file = forced_val_file  # holds the id of ``fallback_val``'s document, when there is one

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from codenas.model.tokenizer import encode_texts, eot_id, load_tokenizer

        if world_size > 1:  # one process per core already: keep each tokenizer to one thread
            os.environ.setdefault("RAYON_NUM_THREADS", "1")
        tok = load_tokenizer(self.tokenizer)
        dtype, eot = token_dtype(tok.get_vocab_size()), eot_id(tok)
        folder = Path(self.folder)
        forced = read_forced_val(self.forced_val_file)
        counts = {"train": {"docs": 0, "tokens": 0, "chars": 0}, "val": {"docs": 0, "tokens": 0, "chars": 0}}
        with atomic_path(folder / f"train-{rank:05d}.bin") as train_tmp, \
                atomic_path(folder / f"val-{rank:05d}.bin") as val_tmp, \
                open(train_tmp, "wb") as train_f, open(val_tmp, "wb") as val_f:
            batch: list[Document] = []

            def flush() -> None:
                for doc, ids in zip(batch, encode_texts(tok, [d.text for d in batch]), strict=True):
                    split = "val" if is_val(doc.id, self.val_fraction, self.seed, forced) else "train"
                    ids.append(eot)
                    np.asarray(ids, dtype=dtype).tofile(val_f if split == "val" else train_f)
                    counts[split]["docs"] += 1
                    counts[split]["tokens"] += len(ids)
                    counts[split]["chars"] += len(doc.text)
                batch.clear()

            for doc in data or ():
                batch.append(doc)
                if len(batch) >= _BATCH_DOCS:
                    flush()
            flush()
        atomic_write_json(folder / f"{rank:05d}.json", counts)
        return
        yield  # a generator step that passes nothing on


def read_forced_val(path: str | os.PathLike | None) -> str | None:
    """The document id a forced-validation file (``{"id": ...}``, written before tokenization) holds; None
    without the file."""
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["id"]


class TokenShards:
    """The memory-mapped shards of one split, addressed as one sequence of tokens (windows may cross shards)."""

    def __init__(self, paths: list[Path], dtype: str, limit: int | None = None):
        self.paths, self.dtype = paths, dtype
        self.arrays = [np.memmap(p, dtype=dtype, mode="r") for p in paths if os.path.getsize(p) > 0]
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.limit = int(self.offsets[-1]) if limit is None else min(limit, int(self.offsets[-1]))

    def __len__(self) -> int:
        return self.limit

    def head(self, n: int) -> TokenShards:
        """The first ``n`` tokens (still memory-mapped)."""
        return TokenShards(self.paths, self.dtype, limit=n)

    def __getitem__(self, item: slice) -> np.ndarray:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("TokenShards supports contiguous slices only")
        start, stop, _ = item.indices(len(self))
        parts = []
        while start < stop:
            i = int(np.searchsorted(self.offsets, start, side="right")) - 1
            local = start - int(self.offsets[i])
            take = min(stop - start, len(self.arrays[i]) - local)
            parts.append(self.arrays[i][local:local + take])
            start += take
        if not parts:
            return np.empty(0, dtype=self.arrays[0].dtype if self.arrays else np.uint16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def open_split(corpus: Path, split: str) -> TokenShards:
    """The ``split`` (train | val) shards of a built corpus folder, as one token sequence."""
    from codenas.io import read_json

    manifest = read_json(Path(corpus) / MANIFEST)
    paths = [Path(corpus) / s["file"] for s in manifest["shards"] if s["split"] == split]
    if not paths:
        raise CodenasError(f"the corpus has no {split} tokens" + (" (it holds a single document: a validation "
                           "split needs two or more; add sources)" if split == "val" else ""), corpus)
    return TokenShards(paths, manifest["dtype"])
