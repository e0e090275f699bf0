"""The fine-tuning mix: every training record of the data stage plus a seeded share of mined records.

``mined_share`` is the share of the fine-tuning examples that are mined records: with ``n`` training records,
``round(n * share / (1 - share))`` mined records are drawn (all of them when there are fewer), uniformly with the
training seed and kept in their file's order, so the same inputs and seed give the same mix on every rank and
every resume.
"""

from __future__ import annotations

import random

from codenas.records import Record


def mined_count(train_records: int, share: float) -> int:
    """How many mined records make them ``share`` of the examples beside ``train_records`` training records."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    return round(train_records * share / (1 - share))


def choose_mined(mined: list[Record], train_records: int, share: float, *, proven_only: bool,
                 seed: int) -> list[Record]:
    """The mined records to train on (see the module docstring); ``proven_only`` draws from proven ones only."""
    pool = [r for r in mined if r.proven or not proven_only]
    wanted = mined_count(train_records, share)
    if wanted >= len(pool):
        return pool
    chosen = sorted(random.Random(seed).sample(range(len(pool)), wanted))
    return [pool[i] for i in chosen]
