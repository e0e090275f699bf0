"""The transformer: a decoder-only language model (GPT-2's layout or a modern one), plus the KV cache.

Default layout (identical to GPT-2, so ``export_hf`` maps it one-to-one):
token embedding ``wte`` + learned position embedding ``wpe`` -> dropout -> ``n_layer`` pre-LayerNorm blocks
(``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``) -> final LayerNorm ``ln_f`` -> ``lm_head`` (tied to ``wte``).
Attention uses one fused ``qkv_proj`` and an ``out_proj`` per block (the names LoRA targets) and
``F.scaled_dot_product_attention``; the MLP is ``fc_in`` -> GELU (tanh approximation, GPT-2's ``gelu_new``)
-> ``fc_out``.

The arch's layout fields are small branches where they act: ``position: rope`` drops ``wpe`` and rotates each
head's queries and keys (rotate-half convention, as Llama); ``norm: rmsnorm`` uses ``nn.RMSNorm`` for every
norm; ``mlp: swiglu`` makes ``fc_in`` produce ``[gate, up]`` (2 x d_ff) and feeds ``silu(gate) * up`` to
``fc_out``; ``qk_norm`` applies an RMSNorm over the head size to queries and keys before the rotation (as Qwen3);
``n_kv_head < n_head`` is grouped-query attention: ``qkv_proj`` produces ``n_head`` query heads and ``n_kv_head``
key and value heads, each key/value head serving ``n_head / n_kv_head`` consecutive query heads.

``forward(idx, targets, segment_ids=...)``: without ``segment_ids`` attention is plain causal (SDPA's fast
path); with them a token attends only to earlier tokens of its own segment and positions restart in each
segment, so records packed into one row are computed exactly as if each were alone. With a ``KVCache`` the
model processes only the new tokens and attends to the cached ones: appended after the ``pos`` cached ones, or,
in a ``per_row`` cache, stored at each row's own ``positions`` (rows of one batch at different lengths, as the
sampler's continuous batching needs).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from codenas.model.config import ArchConfig, describe_layout

NORM_EPS = 1e-5  # GPT-2's layer_norm_epsilon, used by every norm (LayerNorm or RMSNorm)


class KVCache:
    """Keys and values of every layer for a batch of sequences, preallocated to ``max_len`` positions.

    Appending (the default): ``pos`` is the number of positions already filled; the model writes the new tokens'
    keys and values at ``pos`` in each layer and advances ``pos`` once all layers are done.
    ``per_row``: each new token's keys and values go to the slot of its own position in its row
    (``forward(..., positions=...)``), and a token attends to the slots ``0 .. its position`` of its row among the
    first ``span`` slots (``span`` defaults to ``max_len``; a sampler lowers it to what its rows have reached).
    """

    def __init__(self, cfg: ArchConfig, batch_size: int, max_len: int, *, device=None, dtype=torch.float32,
                 per_row: bool = False):
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0
        self.per_row = per_row
        self.span = max_len
        self.positions: torch.Tensor | None = None  # [B, T] while a per-row forward runs

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values of ``layer``; return the keys/values that layer's queries attend to."""
        if self.per_row:
            rows = torch.arange(k.shape[0], device=k.device)[:, None]
            self.k[layer][rows, :, self.positions] = k.transpose(1, 2).to(self.k.dtype)
            self.v[layer][rows, :, self.positions] = v.transpose(1, 2).to(self.v.dtype)
            return self.k[layer, :, :, : self.span].to(k.dtype), self.v[layer, :, :, : self.span].to(v.dtype)
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        # under autocast the new k, v may be bf16 while the cache keeps the model's dtype
        return self.k[layer, :, :, :end].to(k.dtype), self.v[layer, :, :, :end].to(v.dtype)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep the batch rows at indices ``rows``: drop finished sequences, or copy one prompt's row n times."""
        self.k = self.k[:, rows]
        self.v = self.v[:, rows]


def _norm(cfg: ArchConfig, size: int) -> nn.Module:
    """The arch's norm over the last ``size`` features: LayerNorm (with a bias when ``cfg.bias``) or RMSNorm."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=NORM_EPS)
    return nn.LayerNorm(size, eps=NORM_EPS, bias=cfg.bias)


def _rotate(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary position embedding of ``x`` ``[B, H, T, hd]``; ``rope`` = (cos, sin), each ``[B, 1, T, hd]``."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _causal_attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float,
                                   block: int = 128) -> torch.Tensor:
    """Causal attention with dropout on the attention weights, computed ``block`` queries at a time against only
    the keys they may see. The same computation as SDPA's, which on a CPU has no fused kernel with dropout and
    falls back to computing (and drawing dropout masks for) the full ``T x T`` square, half of it masked: this
    does about (n + 1) / 2n of that work for n blocks (62% at T = 512). Eager only: under ``torch.compile``
    SDPA's own fallback is traced and fused."""
    T = q.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = []
    for start in range(0, T, block):
        end = min(start + block, T)
        scores = (q[:, :, start:end] @ k[:, :, :end].transpose(-2, -1)) * scale  # [B, H, end - start, end]
        hidden = torch.ones(end - start, end, dtype=torch.bool, device=q.device).triu(start + 1)  # future keys
        weights = scores.masked_fill(hidden, float("-inf")).softmax(dim=-1).to(v.dtype)
        out.append(F.dropout(weights, p, training=True) @ v[:, :, :end])
    return torch.cat(out, dim=2)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ArchConfig, layer: int):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.layer = layer
        self.dropout = cfg.dropout
        self.qkv_proj = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=cfg.bias)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        if cfg.qk_norm:
            self.q_norm = nn.RMSNorm(cfg.head_dim, eps=NORM_EPS)
            self.k_norm = nn.RMSNorm(cfg.head_dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, kv_cache: KVCache | None,
                rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, C = x.shape
        hd = self.head_dim
        q, k, v = self.qkv_proj(x).split([self.n_head * hd, self.n_kv_head * hd, self.n_kv_head * hd], dim=2)
        q = q.view(B, T, self.n_head, hd)
        k = k.view(B, T, self.n_kv_head, hd)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(B, T, self.n_kv_head, hd).transpose(1, 2)
        if rope is not None:
            q, k = _rotate(q, rope), _rotate(k, rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)
        if attn_mask is not None and attn_mask.dtype not in (torch.bool, q.dtype):
            attn_mask = attn_mask.to(q.dtype)  # an additive mask under autocast
        if self.n_kv_head != self.n_head:
            repeat = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        if (self.training and self.dropout > 0 and attn_mask is None and kv_cache is None and x.device.type == "cpu"
                and not torch.compiler.is_compiling()):  # inductor fuses SDPA's fallback itself
            y = _causal_attention_with_dropout(q, k, v, self.dropout)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=attn_mask is None and kv_cache is None,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.out_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.fc_in = nn.Linear(cfg.d_model, (2 if self.swiglu else 1) * cfg.d_ff, bias=cfg.bias)
        self.fc_out = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc_in(x).chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(self.fc_in(x), approximate="tanh")
        return self.dropout(self.fc_out(h))


class Block(nn.Module):
    def __init__(self, cfg: ArchConfig, layer: int):
        super().__init__()
        self.ln_1 = _norm(cfg, cfg.d_model)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = _norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, kv_cache: KVCache | None,
                rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    rope_cos: torch.Tensor  # buffers of a rope arch: cos and sin of every position
    rope_sin: torch.Tensor

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.position == "learned":
            self.wpe = nn.Embedding(cfg.context_length, cfg.d_model)
        else:  # rope: cos/sin of every position, computed in float32 (not saved: derived from the arch)
            inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
            angles = torch.outer(torch.arange(cfg.context_length, dtype=torch.float32), inv_freq).repeat(1, 2)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = _norm(cfg, cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "fc_out.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        segment_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[B, T, vocab]`` for every position, and the mean cross-entropy over targets != -100 (or None).

        ``segment_ids`` ``[B, T]`` (each segment a contiguous run of equal ids): a token attends only within its
        segment and positions restart at 0 in each, so a packed record is computed exactly as if alone.
        ``kv_cache``: ``idx`` holds only the new tokens, placed after the ``kv_cache.pos`` cached ones (sampling).
        ``positions``: the position of each token, ``[B, T]`` (one row of ids per sequence, so rows of a batch may
        sit at different positions, e.g. left-padded prompts) or ``[T]`` for every row; both learned and rotary
        positions take them. Default: ``kv_cache.pos + arange(T)``, or restarting in each segment. With a
        ``per_row`` cache they also say where each token's keys and values go (``[B, T]``, required; the caller
        keeps them below the cache's length, unchecked so that decoding never waits on the device).
        ``last_only``: logits ``[B, 1, vocab]`` of the last position only (a prompt's prefill).
        """
        B, T = idx.shape
        row_cache = kv_cache if kv_cache is not None and kv_cache.per_row else None
        per_row = row_cache is not None
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(f"sequence of {start + T} tokens exceeds context_length {self.config.context_length}")
        if per_row:
            if positions is None or positions.dim() != 2 or segment_ids is not None:
                raise ValueError("a per_row KV cache needs positions [B, T] and no segment_ids")
        elif positions is None:
            if segment_ids is not None:
                positions = _positions_within_segments(segment_ids)
            else:
                positions = torch.arange(start, start + T, device=idx.device)
        elif int(positions.max()) >= self.config.context_length:
            raise ValueError(f"position {int(positions.max())} exceeds context_length {self.config.context_length}")
        x = self.wte(idx)
        rope = None
        if self.config.position == "learned":
            x = x + self.wpe(positions)
        else:
            positions = positions.expand(B, T)
            rope = (self.rope_cos[positions][:, None].to(x.dtype), self.rope_sin[positions][:, None].to(x.dtype))
        x = self.drop(x)
        attn_mask: torch.Tensor | None
        if row_cache is not None:
            attn_mask = self._row_positions_mask(positions, row_cache.span, x.dtype)
            row_cache.positions = positions
        else:
            attn_mask = self._attention_mask(T, start, segment_ids, kv_cache, idx.device)
        try:
            for block in self.blocks:
                x = block(x, attn_mask, kv_cache, rope)
        finally:
            if row_cache is not None:
                row_cache.positions = None
        if kv_cache is not None and not per_row:
            kv_cache.pos += T
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    @staticmethod
    def _attention_mask(
        T: int, start: int, segment_ids: torch.Tensor | None, kv_cache: KVCache | None, device: torch.device
    ) -> torch.Tensor | None:
        """Boolean mask (True = may attend), or None when SDPA's ``is_causal`` or no mask at all is exact."""
        if segment_ids is not None:
            if kv_cache is not None:
                raise ValueError("segment_ids and kv_cache cannot be combined")
            causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
            same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
            return (causal & same_segment)[:, None]  # [B, 1, T, T], broadcast over heads
        if kv_cache is None or T == 1:
            return None  # plain causal (is_causal=True), or one new token that may see everything cached
        # several new tokens after `start` cached ones: query i sees keys 0 .. start + i
        return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start)

    @staticmethod
    def _row_positions_mask(positions: torch.Tensor, span: int, dtype: torch.dtype) -> torch.Tensor:
        """``[B, 1, T, span]`` additive mask: a token sees the cache slots of its row up to its own position
        (a float mask: SDPA on CPU is several times slower with a boolean one)."""
        hidden = torch.arange(span, device=positions.device)[None, None, None, :] > positions[:, None, :, None]
        return torch.zeros(hidden.shape, dtype=dtype, device=positions.device).masked_fill_(hidden, float("-inf"))

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *, per_row: bool = False) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default: context_length) tokens;
        ``per_row``: rows at their own positions (see ``KVCache``)."""
        p = self.wte.weight
        return KVCache(self.config, batch_size, max_len or self.config.context_length, device=p.device, dtype=p.dtype,
                       per_row=per_row)

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (tied weights counted once); ``non_embedding`` leaves out wte, wpe and lm_head.
        ``count_params(config)`` gives the same from the arch alone."""
        params = {id(p): p for p in self.parameters()}
        if non_embedding:
            embeddings = [self.wte.weight, self.lm_head.weight] + ([self.wpe.weight] if hasattr(self, "wpe") else [])
            for p in embeddings:
                params.pop(id(p), None)
        return sum(p.numel() for p in params.values())

    def flops_per_token(self) -> int:
        """Forward FLOPs per token at the full context (see ``flops_per_token``), from this model's parameters."""
        return flops_per_token(self.config, self.num_params(non_embedding=True))


def count_params(cfg: ArchConfig, *, non_embedding: bool = False) -> int:
    """Parameters of ``GPT(cfg)`` (tied weights once; ``non_embedding``: without wte, wpe and lm_head), counted
    from the shape alone: nothing is built, so it answers for shapes far too large to allocate (the memory check,
    the search). ``GPT(cfg).num_params(non_embedding)`` gives the same number."""
    d, hd, ff = cfg.d_model, cfg.head_dim, cfg.d_ff
    bias = int(cfg.bias)
    norm = d * (1 if cfg.norm == "rmsnorm" else 1 + bias)
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * hd
    attention = d * qkv + qkv * bias + d * d + d * bias + (2 * hd if cfg.qk_norm else 0)
    width = 2 * ff if cfg.mlp == "swiglu" else ff
    mlp = d * width + width * bias + ff * d + d * bias
    blocks = cfg.n_layer * (2 * norm + attention + mlp) + norm
    if non_embedding:
        return blocks
    embeddings = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    positions = cfg.context_length * d if cfg.position == "learned" else 0
    return embeddings + positions + blocks


def flops_per_token(cfg: ArchConfig, non_embedding_params: int | None = None) -> int:
    """Forward FLOPs per token at the full context (Kaplan et al.'s count): ``2 N`` for the matrices (N = the
    non-embedding parameters, ``count_params(cfg, non_embedding=True)`` unless given, plus the output head's
    ``d_model * vocab``) plus ``2 n_layer context d_model`` for the attention scores and the weighted sum over a
    causal window. Training costs about three times this."""
    if non_embedding_params is None:
        non_embedding_params = count_params(cfg, non_embedding=True)
    matrices = non_embedding_params + cfg.d_model * cfg.vocab_size
    return 2 * matrices + 2 * cfg.n_layer * cfg.context_length * cfg.d_model


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameters of any model (a GPT, an ``hf:`` model, a PEFT wrapper), shared (tied)
    tensors counted once; frozen ones count in the total (they still cost forward and backward FLOPs)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _positions_within_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its segment: ``[[5, 5, 5, 2, 2]] -> [[0, 1, 2, 0, 1]]``."""
    T = segment_ids.shape[1]
    index = torch.arange(T, device=segment_ids.device).expand_as(segment_ids)
    is_start = torch.ones_like(segment_ids, dtype=torch.bool)
    is_start[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    segment_start = torch.where(is_start, index, 0).cummax(dim=1).values
    return index - segment_start


def describe(model: GPT) -> str:
    """One line for logs: the shape of the model and its parameter count."""
    c = model.config
    name = f"{c.name} " if c.name else ""
    return (f"GPT {name}({describe_layout(c)}): {model.num_params() / 1e6:.2f}M parameters, "
            f"{model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding")
