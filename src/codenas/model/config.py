"""Architecture config: the validated dataclass behind an arch JSON (``configs/*.json``).

An arch JSON is a flat object whose keys are exactly the fields of ``ArchConfig`` (see docs/architecture.md).
Bad input raises ``CodenasError`` naming the field and the file, e.g.
``configs/x.json: arch field 'n_head' must be a positive integer, got -1``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codenas.io import CodenasError, read_json
from codenas.paths import resolve_config

_POSITIVE_INT_FIELDS = ("n_layer", "n_head", "d_model", "d_ff", "context_length", "vocab_size")
# the layout choices (GPT-2's first): field -> allowed values
CHOICES = {
    "position": ("learned", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu"),
}


@dataclass(frozen=True)
class ArchConfig:
    """Shape and layout of a decoder-only transformer; the defaults are GPT-2's layout.

    ``n_kv_head`` (grouped-query attention) defaults to ``n_head``: a config built without it stores ``n_head``.
    """

    n_layer: int
    n_head: int
    d_model: int
    d_ff: int
    context_length: int
    vocab_size: int
    dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    position: str = "learned"
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    mlp: str = "gelu"
    qk_norm: bool = False
    n_kv_head: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            object.__setattr__(self, "n_kv_head", self.n_head)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def is_gpt2_layout(self) -> bool:
        """Learned positions, LayerNorm, GELU MLP, plain multi-head attention (what every field defaults to)."""
        return (self.position, self.norm, self.mlp, self.qk_norm, self.n_kv_head) == (
            "learned", "layernorm", "gelu", False, self.n_head)

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
        for name in _POSITIVE_INT_FIELDS:
            _check_positive_int(name, d[name], path)
        if "dropout" in d:
            _check_dropout(d["dropout"], path)
        for name in ("bias", "tie_embeddings", "qk_norm"):
            if name in d and not isinstance(d[name], bool):
                raise CodenasError(f"arch field {name!r} must be true or false, got {d[name]!r}", path)
        for name, allowed in CHOICES.items():
            if name in d and d[name] not in allowed:
                raise CodenasError(f"arch field {name!r} must be one of {', '.join(allowed)}, got {d[name]!r}", path)
        theta = d.get("rope_theta", 10000.0)
        if isinstance(theta, bool) or not isinstance(theta, int | float) or not theta > 0 or theta == float("inf"):
            raise CodenasError(f"arch field 'rope_theta' must be a positive number, got {theta!r}", path)
        if d.get("n_kv_head") is not None:
            _check_positive_int("n_kv_head", d["n_kv_head"], path)
            if d["n_head"] % d["n_kv_head"]:
                raise CodenasError(f"arch field 'n_kv_head' ({d['n_kv_head']}) must divide 'n_head' ({d['n_head']})",
                                   path)
        if "name" in d and not isinstance(d["name"], str):
            raise CodenasError(f"arch field 'name' must be a string, got {d['name']!r}", path)
        if d["d_model"] % d["n_head"] != 0:
            raise CodenasError(
                f"arch field 'd_model' ({d['d_model']}) must be divisible by 'n_head' ({d['n_head']})", path
            )
        if d.get("position") == "rope" and (d["d_model"] // d["n_head"]) % 2:
            raise CodenasError(f"arch field 'position' rope needs an even head size (d_model / n_head), got "
                               f"{d['d_model'] // d['n_head']}", path)
        return cls(**{**d, "dropout": float(d.get("dropout", 0.0)), "rope_theta": float(theta)})

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


def _check_positive_int(name: str, value: Any, path: str | os.PathLike | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CodenasError(f"arch field {name!r} must be a positive integer, got {value!r}", path)


def _check_dropout(value: Any, path: str | os.PathLike | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise CodenasError(f"arch field 'dropout' must be a number in [0, 1), got {value!r}", path)
