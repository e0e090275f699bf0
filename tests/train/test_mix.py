"""The fine-tuning mix: how many mined records a share means, a seeded choice, proven-only."""

from __future__ import annotations

import pytest

from codenas.records import Record
from codenas.train.mix import choose_mined, mined_count


def _mined(n: int) -> list[Record]:
    return [Record(id=f"mined_{i}", source="mined", prompt=f"def f{i}():\n", solution="    pass\n",
                   tests=f"assert callable(f{i})", entry_point=f"f{i}", proven=i % 2 == 0) for i in range(n)]


def test_share_of_the_examples():
    assert mined_count(100, 0.0) == 0 and mined_count(100, 0.5) == 100 and mined_count(300, 0.25) == 100
    with pytest.raises(ValueError):
        mined_count(10, 1.0)


def test_seeded_choice_in_file_order_and_proven_only():
    mined = _mined(50)
    first = choose_mined(mined, 20, 0.5, proven_only=False, seed=1)
    assert len(first) == 20 and first == choose_mined(mined, 20, 0.5, proven_only=False, seed=1)
    assert [r.id for r in first] == sorted((r.id for r in first), key=lambda i: int(i.split("_")[1]))
    assert first != choose_mined(mined, 20, 0.5, proven_only=False, seed=2)
    proven = choose_mined(mined, 100, 0.5, proven_only=True, seed=1)
    assert len(proven) == 25 and all(r.proven for r in proven)  # fewer than asked: all of them
    assert choose_mined(mined, 100, 0.0, proven_only=False, seed=1) == []
