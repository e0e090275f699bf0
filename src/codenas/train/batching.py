"""Supervised batches for fine-tuning: prompt/solution records -> padded (inputs, targets) with loss masks.

Each record becomes ``prompt ids + solution ids + <|endoftext|>``; prompt and solution are tokenized separately
(the prompt exactly as the sampler will see it at evaluation time). Targets are the inputs shifted by one, with
``-100`` (ignored by the loss) wherever the target token belongs to the prompt or is padding, so only solution
tokens and the end-of-text token are learned.

Truncation: a record longer than ``context_length + 1`` tokens keeps its first ``context_length + 1`` tokens (the
whole prompt, the start of the solution; the end of the solution and the end-of-text are cut). A record whose
prompt alone fills the context has no supervised token left and is dropped; the number dropped is reported.

Batches are right-padded to the longest example in the batch, one record per row, so attention never crosses
records (no packing: packed records would sit at positions they never see at sampling time).

Order: draw ``k`` reads positions ``[k*B, (k+1)*B)`` of an endless stream made of seeded permutations of the
examples, one per epoch. A batch is a pure function of (seed, k), so resuming needs only the number of draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from codenas.io import CodenasError
from codenas.model.tokenizer import encode_texts
from codenas.records import Record

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SupervisedExample:
    """One tokenized record: ``ids`` = prompt + solution + end-of-text (maybe truncated); the first
    ``n_prompt`` ids are prompt tokens, which get no loss."""

    ids: tuple[int, ...]
    n_prompt: int


def encode_records(records: Sequence[Record], tokenizer: Tokenizer, eot_id: int,
                   context_length: int) -> tuple[list[SupervisedExample], int]:
    """Tokenize records into examples; returns ``(examples, n_dropped)`` (records with no solution token left)."""
    prompts = encode_texts(tokenizer, [r.prompt for r in records])
    solutions = encode_texts(tokenizer, [r.solution for r in records])
    examples, dropped = [], 0
    for prompt_ids, solution_ids in zip(prompts, solutions, strict=True):
        ids = (prompt_ids + solution_ids + [eot_id])[: context_length + 1]
        if len(ids) <= len(prompt_ids):
            dropped += 1
            continue
        examples.append(SupervisedExample(tuple(ids), len(prompt_ids)))
    return examples, dropped


def collate(examples: Sequence[SupervisedExample], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(inputs, targets)`` LongTensors of shape [B, T]; targets are -100 on prompt and padding."""
    width = max(len(e.ids) for e in examples) - 1
    inputs = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        ids = torch.tensor(e.ids, dtype=torch.long)
        n = len(e.ids) - 1
        inputs[row, :n] = ids[:-1]
        targets[row, :n] = ids[1:]
        # target position t predicts token t+1: prompt tokens are at indices < n_prompt, i.e. t < n_prompt - 1
        targets[row, : e.n_prompt - 1] = IGNORE_INDEX
    return inputs, targets


class SupervisedBatches:
    """An endless, seeded, resumable stream of padded supervised batches (the training loop's batch source).

    ``next_batch()`` returns ``{"input_ids", "targets"}``; the only state is how many batches were drawn, so
    ``batch_at(k)`` is a pure function of (seed, k). With ``rank``/``world_size`` (DDP) each process takes its own
    ``batch_size`` rows of the same global draw, so no example is seen twice within an epoch.
    """

    def __init__(self, examples: Sequence[SupervisedExample], batch_size: int, pad_id: int, *, seed: int,
                 rank: int = 0, world_size: int = 1):
        if not examples:
            raise CodenasError("no training examples (every record was empty or longer than the context)")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drawn = 0
        self._perms: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.examples), generator=g).tolist()
        return self._perms[epoch]

    def indices(self, k: int) -> list[int]:
        """Example indices of this process's rows in draw ``k``."""
        start = (k * self.world_size + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, offset = divmod(pos, len(self.examples))
            out.append(self._order(epoch)[offset])
        return out

    def batch_at(self, k: int) -> dict[str, torch.Tensor]:
        inputs, targets = collate([self.examples[i] for i in self.indices(k)], self.pad_id)
        return {"input_ids": inputs, "targets": targets}

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.batch_at(self.drawn)
        self.drawn += 1
        return batch

    def state_dict(self) -> dict:
        return {"drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.drawn = int(state["drawn"])


def eval_batches(examples: Sequence[SupervisedExample], batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """All examples in order, in padded batches (for the validation loss)."""
    out = []
    for i in range(0, len(examples), batch_size):
        inputs, targets = collate(examples[i: i + batch_size], pad_id)
        out.append({"input_ids": inputs, "targets": targets})
    return out
