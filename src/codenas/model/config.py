"""Architecture config: the validated dataclass behind an arch JSON (``configs/*.json``).

An arch JSON is a flat object whose keys are exactly the fields of ``ArchConfig`` (see docs/architecture.md).
Each field is declared once, with its metadata (``arch_field``): its help, its allowed values (``choices``,
``min``, ``gt``, ``lt``) and, for a layout field the search picks, the choices searched by default (``search``),
the words of its ``codenas search`` flag (``flag``) and how a description shows it (``show``). From that one
declaration come the validation of an arch JSON (``from_dict``), the search space and the search flags
(``codenas.search.space``, ``cli.py``) and the one-line description (``describe_layout``). Bad input raises
``CodenasError`` naming the field and the file, e.g.
``configs/x.json: arch field 'n_head' must be a positive integer, got -1``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codenas.io import CodenasError, read_json
from codenas.paths import resolve_config


def arch_field(default: Any = dataclasses.MISSING, *, help: str, search: tuple | None = None,  # noqa: A002
               flag: str = "", show: Callable[[Any, Any], str] | None = None, cap: str = "", **rules: Any) -> Any:
    """An ``ArchConfig`` field and its metadata: ``help`` (one line); ``choices`` / ``min`` / ``gt`` / ``lt``
    (allowed values); a searched layout field's default search choices ``search``, the
    words ``flag`` of its search flag's help, ``cap`` (a field the sampled value is capped at, and its default)
    and ``show(value, config)``: how ``describe_layout`` writes it ("" for nothing)."""
    meta = {"help": help, **rules}
    if search is not None:
        meta.update(search=search, flag=flag, show=show or (lambda value, config: str(value)), cap=cap)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ArchConfig:
    """Shape and layout of a decoder-only transformer; the defaults are GPT-2's layout.

    ``n_kv_head`` (grouped-query attention) defaults to ``n_head``: a config built without it (or with None)
    stores ``n_head``, so a config's ``n_kv_head`` is always an int.
    """

    n_layer: int = arch_field(help="transformer blocks", min=1)
    n_head: int = arch_field(help="attention heads; must divide d_model", min=1)
    d_model: int = arch_field(help="residual stream width (embedding size)", min=1)
    d_ff: int = arch_field(help="hidden width of each MLP", min=1)
    context_length: int = arch_field(help="maximum tokens per sequence", min=1)
    vocab_size: int = arch_field(help="rows of the token embedding", min=1)
    dropout: float = arch_field(0.0, help="dropout on embeddings, attention weights and residual branches",
                                min=0, lt=1)
    bias: bool = arch_field(True, help="biases in linear layers and LayerNorms", search=(False,),
                            flag="biases in linear layers and norms",
                            show=lambda value, config: "" if value else "no biases")
    tie_embeddings: bool = arch_field(True, help="the output head reuses the token embedding matrix")
    position: str = arch_field("learned", help="learned position embedding or rotary embeddings",
                               choices=("learned", "rope"), search=("rope",), flag="position encoding")
    rope_theta: float = arch_field(10000.0, help="rotary base", gt=0)
    norm: str = arch_field("layernorm", help="every norm: LayerNorm or RMSNorm", choices=("layernorm", "rmsnorm"),
                           search=("layernorm", "rmsnorm"), flag="norm")
    mlp: str = arch_field("gelu", help="GELU MLP or SwiGLU", choices=("gelu", "swiglu"), search=("swiglu",),
                          flag="MLP")
    qk_norm: bool = arch_field(False, help="RMSNorm on queries and keys per head", search=(False, True),
                               flag="QK normalisation", show=lambda value, config: "qk_norm" if value else "")
    n_kv_head: int = arch_field(
        None, help="key/value heads (grouped-query attention); default n_head", min=1, search=(1, 2, 4, 8),
        flag="key/value heads, capped at the trial's n_head (grouped-query attention)", cap="n_head",
        show=lambda value, config: f"{value} kv heads" if value != config.n_head else "")
    name: str = arch_field("", help="shown in logs and saved in checkpoints")

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def is_gpt2_layout(self) -> bool:
        """Every searched layout field at its default: learned positions, LayerNorm, GELU MLP, no QK norms,
        plain multi-head attention."""
        return all(getattr(self, f.name) == _default(f, self) for f in layout_fields())

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | os.PathLike | None = None) -> ArchConfig:
        """Validate ``d`` and build the config; a ``CodenasError`` names the first bad field (and ``path``)."""
        if not isinstance(d, dict):
            raise CodenasError(f"an arch config must be a JSON object, got {type(d).__name__}", path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CodenasError(f"unknown arch field {unknown[0]!r} (allowed: {', '.join(sorted(known))})", path)
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in d]
        if missing:
            raise CodenasError(f"missing arch field {missing[0]!r}", path)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                problem = field_problem(f, d[f.name])
                if problem:
                    raise CodenasError(f"arch field {f.name!r} must be {problem}, got {d[f.name]!r}", path)
                values[f.name] = float(d[f.name]) if field_type(f) is float else d[f.name]
        if d.get("n_kv_head") is not None and d["n_head"] % d["n_kv_head"]:
            raise CodenasError(f"arch field 'n_kv_head' ({d['n_kv_head']}) must divide 'n_head' ({d['n_head']})",
                               path)
        if d["d_model"] % d["n_head"] != 0:
            raise CodenasError(
                f"arch field 'd_model' ({d['d_model']}) must be divisible by 'n_head' ({d['n_head']})", path
            )
        if d.get("position") == "rope" and (d["d_model"] // d["n_head"]) % 2:
            raise CodenasError(f"arch field 'position' rope needs an even head size (d_model / n_head), got "
                               f"{d['d_model'] // d['n_head']}", path)
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ArchConfig:
        """Read and validate an arch JSON file; ``name`` defaults to the file's stem."""
        d = read_json(path)
        if isinstance(d, dict) and "name" not in d:
            d = {**d, "name": Path(path).stem}
        return cls.from_dict(d, path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_arch(name_or_path: str | os.PathLike) -> ArchConfig:
    """An arch given as a JSON path or a name in configs/ (``"tiny"``, ``"codenas_l8h512_regularized"``)."""
    return ArchConfig.from_json(resolve_config(name_or_path, ".json"))


def layout_fields() -> list[dataclasses.Field]:
    """The layout fields the search picks (those declared with ``search`` choices), in declaration order."""
    return [f for f in dataclasses.fields(ArchConfig) if "search" in f.metadata]


def layout_flag_help(f: dataclasses.Field) -> str:
    """The help of a layout field's `codenas search` flag: ``Choices of norm [layernorm,rmsnorm].``"""
    return f"Choices of {f.metadata['flag']} [{','.join(str(v).lower() for v in f.metadata['search'])}]."


def field_type(f: dataclasses.Field) -> type:
    """The value type of an ``ArchConfig`` field (``int`` for ``int | None``)."""
    tp = typing.get_type_hints(ArchConfig)[f.name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _default(f: dataclasses.Field, config: Any) -> Any:
    """A field's default; a capped field's is the field it is capped at (``n_kv_head`` -> ``n_head``)."""
    cap = f.metadata.get("cap")
    return getattr(config, cap) if cap else f.default


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What ``value`` must be for field ``f`` ("a positive integer"), or None when it is allowed."""
    kind, m = field_type(f), f.metadata
    if value is None and f.default is None:
        return None
    if kind is bool:
        return None if isinstance(value, bool) else "true or false"
    if kind is str:
        if "choices" in m:
            return None if value in m["choices"] else f"one of {', '.join(m['choices'])}"
        return None if isinstance(value, str) else "a string"
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= m.get("min", -math.inf)
        return None if ok else "a positive integer" if m.get("min") == 1 else "an integer"
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if "lt" in m:
        ok = number and m.get("min", -math.inf) <= value < m["lt"]
        return None if ok else f"a number in [{m.get('min', '-inf')}, {m['lt']})"
    ok = number and value > m.get("gt", -math.inf)
    return None if ok else "a positive number" if m.get("gt") == 0 else "a number"


def describe_layout(c: ArchConfig) -> str:
    """The shape and (when not GPT-2's) layout of an architecture: ``2 layers, 4 heads, d_model 128, ...``."""
    shown = [] if c.is_gpt2_layout else [f.metadata["show"](getattr(c, f.name), c) for f in layout_fields()]
    layout = "".join(f", {text}" for text in shown if text)
    return (f"{c.n_layer} layers, {c.n_head} heads, d_model {c.d_model}, d_ff {c.d_ff}, "
            f"context {c.context_length}, vocab {c.vocab_size}{layout}")
