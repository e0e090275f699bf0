"""The search space: which architectures a trial may pick, how a trial samples one, and its exact size.

Shape dimensions: ``n_layer`` (an integer range), ``n_head``, ``d_model``, the feed-forward ratio (``d_ff = ratio *
d_model``, rounded to a multiple of 8 when not whole), ``context_length`` (each a list of choices) and ``dropout``
(a float range). Layout dimensions: every ``ArchConfig`` field declared with ``search`` choices
(``codenas.model.config.layout_fields``: ``bias``, ``position``, ``norm``, ``mlp``, ``qk_norm``, ``n_kv_head``; by
default no biases, rotary positions and SwiGLU, with both norms, with and without QK norms, and every key/value head
count; ``n_kv_head`` is capped at the trial's ``n_head``: 8 with 4 heads means 4, plain multi-head attention), then
the training ``optimizer`` (adamw | muon). The layout part of ``SearchSpace``, its checks, its flag parsing and its
sampling are generated from those declarations. The vocabulary size is not searched: it is the tokenizer's. A
sampled shape whose ``d_model`` is not a multiple of ``n_head`` (or whose ``n_kv_head`` does not divide ``n_head``)
is not a valid ``ArchConfig``; ``sample_arch`` returns the reason instead so the trial is recorded as infeasible
(the default choices are powers of two times 1 or 3 and never clash).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from codenas.io import CodenasError
from codenas.model.config import ArchConfig, field_type, layout_fields
from codenas.model.model import count_params as count_params  # the search reads the model's own accounting
from codenas.model.model import flops_per_token as flops_per_token
from codenas.settings import OPTIMIZERS

SEARCHED = ("n_layer", "n_head", "d_model", "d_ff_ratio", "context_length", "dropout")
LAYOUT = tuple(f.name for f in layout_fields())  # in the order a trial samples them, before the optimizer


@typing.dataclass_transform(frozen_default=True)
def _with_layout(cls: type) -> type:
    """Add a ``tuple`` field per searched layout field of ``ArchConfig`` (its ``search`` choices as the default),
    after the shape fields and before ``optimizer``, and make ``cls`` a frozen dataclass."""
    optimizer = cls.__annotations__.pop("optimizer")
    for f in layout_fields():
        cls.__annotations__[f.name] = "tuple"
        setattr(cls, f.name, dataclasses.field(default=f.metadata["search"]))
    cls.__annotations__["optimizer"] = optimizer
    return dataclass(frozen=True)(cls)


@_with_layout
class SearchSpace:
    """Ranges (``low, high`` inclusive) and choices of the searched architecture fields (and one field of choices
    per searched layout field of ``ArchConfig``, added by ``_with_layout``)."""

    n_layer: tuple[int, int] = (2, 8)
    n_head: tuple[int, ...] = (2, 4, 8)
    d_model: tuple[int, ...] = (128, 192, 256, 384, 512)
    d_ff_ratio: tuple[float, ...] = (2, 8 / 3, 3, 4)  # 8/3: SwiGLU's usual width (a 4x GELU MLP's parameters)
    context_length: tuple[int, ...] = (128, 256, 512)
    dropout: tuple[float, float] = (0.0, 0.0)
    optimizer: tuple[str, ...] = OPTIMIZERS

    if typing.TYPE_CHECKING:
        def __getattr__(self, name: str) -> tuple: ...  # the layout fields _with_layout adds

    def __post_init__(self) -> None:
        for name in ("n_layer", "dropout"):
            low, high = getattr(self, name)
            if low > high:
                raise CodenasError(f"search range {name} is empty: {low} > {high}")
        choices = {f.name: f.metadata["choices"] for f in layout_fields() if "choices" in f.metadata}
        for name, allowed in {**choices, "optimizer": OPTIMIZERS}.items():
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values):
                raise CodenasError(f"search choices {name} must be among {', '.join(allowed)}, got {values!r}")
        for name in [f.name for f in layout_fields() if field_type(f) is bool]:
            values = getattr(self, name)
            if not values or any(not isinstance(v, bool) for v in values):
                raise CodenasError(f"search choices {name} must be true/false, got {values!r}")
        ints = [f.name for f in layout_fields() if field_type(f) is int]
        if not self.d_ff_ratio or any(isinstance(v, bool) or not isinstance(v, int | float) or v <= 0
                                      for v in self.d_ff_ratio):
            raise CodenasError(f"search choices d_ff_ratio must be positive numbers, got {self.d_ff_ratio!r}")
        for name in ("n_head", "d_model", "context_length", *ints):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise CodenasError(f"search choices {name} must be positive integers, got {values!r}")
        if self.n_layer[0] <= 0:
            raise CodenasError(f"search range n_layer must be positive, got {self.n_layer!r}")
        if not 0.0 <= self.dropout[0] <= self.dropout[1] < 1.0:
            raise CodenasError(f"search range dropout must lie in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, list]:
        return {name: list(values) for name, values in asdict(self).items()}


def shape_of(params: dict[str, Any]) -> dict[str, Any] | None:
    """The arch fields a trial's sampled values stand for (``d_ff = d_ff_ratio * d_model``, ``n_kv_head`` capped
    at ``n_head``; layout fields not sampled are GPT-2's); None if incomplete."""
    if not set(SEARCHED) <= params.keys():
        return None
    return {
        "n_layer": params["n_layer"],
        "n_head": params["n_head"],
        "d_model": params["d_model"],
        "d_ff": d_ff_of(params["d_ff_ratio"], params["d_model"]),
        "context_length": params["context_length"],
        "dropout": round(params["dropout"], 4),
        **{f.name: _sampled(f, params) for f in layout_fields()},
    }


def d_ff_of(ratio: float, d_model: int) -> int:
    """``ratio * d_model``, rounded to a multiple of 8 when it is not whole (8/3 of 128 -> 344)."""
    width = ratio * d_model
    return int(width) if float(width).is_integer() else max(8, 8 * round(width / 8))


def _sampled(f: dataclasses.Field, params: dict[str, Any]) -> Any:
    """A layout field's value in a trial: as sampled (capped), or its default for trials from before it was
    searched (GPT-2's layout; a capped field's default is the field it is capped at)."""
    cap = f.metadata["cap"]
    if not cap:
        return params.get(f.name, f.default)
    return min(params.get(f.name, params[cap]), params[cap])


def sample_arch(trial: optuna.Trial, space: SearchSpace, vocab_size: int, *,
                name: str = "") -> tuple[ArchConfig | None, str]:
    """Ask ``trial`` for one point of ``space``; return ``(arch, "")``, or ``(None, reason)`` when it is invalid."""
    trial.suggest_int("n_layer", *space.n_layer)
    for choice in ("n_head", "d_model", "d_ff_ratio", "context_length"):
        trial.suggest_categorical(choice, getattr(space, choice))
    trial.suggest_float("dropout", *space.dropout)
    for choice in (*LAYOUT, "optimizer"):
        trial.suggest_categorical(choice, getattr(space, choice))
    shape = shape_of(trial.params)
    assert shape is not None  # every searched value was just suggested
    if shape["d_model"] % shape["n_head"]:
        return None, f"d_model {shape['d_model']} is not a multiple of n_head {shape['n_head']}"
    if shape["n_head"] % shape["n_kv_head"]:
        return None, f"n_kv_head {shape['n_kv_head']} does not divide n_head {shape['n_head']}"
    if shape["position"] == "rope" and (shape["d_model"] // shape["n_head"]) % 2:
        return None, f"rope needs an even head size, got {shape['d_model'] // shape['n_head']}"
    return ArchConfig(**shape, vocab_size=vocab_size, name=name), ""


def optimizer_of(params: dict[str, Any]) -> str:
    """The optimizer a trial's sampled values name (adamw for trials from before it was searched)."""
    return params.get("optimizer", "adamw")


def smallest_arch(space: SearchSpace, vocab_size: int) -> ArchConfig:
    """The shape of ``space`` with the fewest parameters: the most heads sharing the fewest key/value heads (the
    fused projection has ``d_model * (1 + 2 * n_kv_head / n_head)`` rows), and, for each other layout field, the
    choice that costs the fewest parameters (no position table, gain-only norms, a two-matrix MLP, no qk norms)."""
    d_model = min(space.d_model)
    n_head = max((h for h in space.n_head if d_model % h == 0), default=1)
    n_kv_head = min(min(space.n_kv_head), n_head)
    n_kv_head = max(k for k in range(1, n_kv_head + 1) if n_head % k == 0)
    arch = ArchConfig(n_layer=space.n_layer[0], n_head=n_head, n_kv_head=n_kv_head, d_model=d_model,
                      d_ff=d_ff_of(min(space.d_ff_ratio), d_model), context_length=min(space.context_length),
                      vocab_size=vocab_size)
    for f in layout_fields():
        if not f.metadata["cap"]:
            choices = getattr(space, f.name)
            arch = min((dataclasses.replace(arch, **{f.name: v}) for v in choices), key=count_params)
    return arch


def _parse_number(text: str, kind: type, name: str) -> int | float:
    try:
        return kind(text.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise CodenasError(f"search {name}: {text.strip()!r} is not {what}") from None


def parse_space(flags: dict[str, str | None]) -> SearchSpace:
    """A ``SearchSpace`` from flag strings: ranges (n_layer, dropout) as ``low:high``, choices as ``a,b,c`` (of
    the layout fields' type: words, true/false or integers).

    Keys missing or None keep their defaults: ``parse_space({"n_layer": "2:4", "d_model": "128,256",
    "position": "rope", "qk_norm": "false,true"})``.
    """
    kinds = {f.name: field_type(f) for f in layout_fields()} | {"optimizer": str}
    fields: dict[str, tuple] = {}
    for name, text in flags.items():
        if text is None:
            continue
        if kinds.get(name) is str:
            fields[name] = tuple(part.strip() for part in text.split(","))
        elif kinds.get(name) is bool:
            words = [part.strip().lower() for part in text.split(",")]
            if any(w not in ("true", "false") for w in words):
                raise CodenasError(f"search {name} must be true and/or false, got {text!r}")
            fields[name] = tuple(w == "true" for w in words)
        elif name in ("n_layer", "dropout"):
            kind = int if name == "n_layer" else float
            parts = text.split(":")
            if len(parts) != 2:
                raise CodenasError(f"search range {name} must look like low:high, got {text!r}")
            fields[name] = tuple(_parse_number(p, kind, name) for p in parts)
        elif name == "d_ff_ratio":  # whole ratios stay integers (the stored space of earlier studies)
            ratios = (float(_parse_number(p, float, name)) for p in text.split(","))
            fields[name] = tuple(int(r) if r.is_integer() else r for r in ratios)
        else:
            fields[name] = tuple(_parse_number(p, int, name) for p in text.split(","))
    return SearchSpace(**fields)

