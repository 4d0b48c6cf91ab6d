"""Reference transformer for discrete flow matching on sequences.

Pre-LN transformer blocks with rotary (or learned) positions, optional time conditioning by
adaptive LayerNorm (adaLN-Zero: shift, scale and gate regressed from a time embedding, zero
initialised), a key padding mask, and ``causal=True`` for the same architecture as an
autoregressive baseline. Attention uses ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gm.checks import (
    Checks,
    broadcast_time,
    describe_index_range,
    describe_time_range,
    index_out_of_range,
    time_out_of_range,
    value_checks_on,
)
from gm.guidance import NULL_LABEL

__all__ = ["TokenTransformer", "apply_rotary", "append_kv"]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (x_{2i}, x_{2i+1}) of ``x`` (..., L, D) by position-dependent angles."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return rotated.flatten(-2)


def append_kv(
    past: list[tuple[Tensor, Tensor]] | None, new: list[tuple[Tensor, Tensor]]
) -> list[tuple[Tensor, Tensor]]:
    """A key/value cache (per layer, ``(B, heads, P, head_dim)``) with ``new`` entries (from
    ``TokenTransformer(..., return_kv=True)``) appended along the positions; ``past=None`` is empty."""
    if past is None:
        return list(new)
    return [(torch.cat([k0, k], 2), torch.cat([v0, v], 2)) for (k0, v0), (k, v) in zip(past, new)]


#: Rows of the rotary cos/sin tables (positions beyond are computed; see ``_RotaryCache``).
ROTARY_TABLE_ROWS = 8192


class _RotaryCache(nn.Module):
    """Rotary angles' cosines and sines ``(L, head_dim / 2)`` for integer positions ``(L,)``.

    Positions below ``table_len`` are rows of a table computed once (in float64); others are
    computed on the fly. Why a table: under ``torch.compile`` the partitioner recomputes cheap
    pointwise ops in the backward instead of saving them, and the float64 cos/sin then ran once per
    element of the rotated ``(B, heads, L, head_dim)`` queries and keys rather than once per
    position: the compiled text step was 1.3x slower than eager on a CPU. A gather is cheap to
    recompute. The table holds at most :data:`ROTARY_TABLE_ROWS` rows, whatever ``max_len``.
    The frequencies of computed angles are rebuilt in float64 each call, so a model cast to
    bf16 or fp16 still rotates far positions by the right angles."""

    cos_table: Tensor
    sin_table: Tensor

    def __init__(self, head_dim: int, base: float = 10000.0, table_len: int = 1024) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        self.head_dim, self.base = head_dim, float(base)
        angles = torch.arange(min(table_len, ROTARY_TABLE_ROWS), dtype=torch.float64)[:, None] * self._inv_freq()
        self.register_buffer("cos_table", torch.cos(angles), persistent=False)
        self.register_buffer("sin_table", torch.sin(angles), persistent=False)

    def _inv_freq(self, device: torch.device | None = None) -> Tensor:
        steps = torch.arange(0, self.head_dim, 2, dtype=torch.float64, device=device)
        return (self.base ** (-steps / self.head_dim))[None, :]

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        rows = self.cos_table.shape[0]
        inside = ((positions >= 0) & (positions < rows))[:, None]
        index = positions.clamp(0, rows - 1)
        # negative positions and those past the table (a where, not a branch: no host read of the ids)
        angles = positions.to(torch.float64)[:, None] * self._inv_freq(positions.device)
        table_dtype = self.cos_table.dtype
        cos = torch.where(inside, self.cos_table[index], torch.cos(angles).to(table_dtype))
        sin = torch.where(inside, self.sin_table[index], torch.sin(angles).to(table_dtype))
        return cos.to(dtype), sin.to(dtype)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float, time_conditioning: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not time_conditioning)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not time_conditioning)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout
        self.modulation = nn.Linear(width, 6 * width) if time_conditioning else None
        if self.modulation is not None:
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(
        self,
        h: Tensor,
        cond: Tensor | None,
        rope: tuple[Tensor, Tensor] | None,
        attn_mask: Tensor | None,
        causal: bool,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The block's output and this call's keys and values ``(B, heads, L, head_dim)`` (after
        rotary); ``past`` keys and values are prepended to the attended ones (a cache)."""
        if self.modulation is not None and cond is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None, :].chunk(6, dim=-1)
        else:
            shift1 = scale1 = shift2 = scale2 = 0.0
            gate1 = gate2 = 0.0
        a = self.norm1(h) * (1 + scale1) + shift1
        q, k, v = rearrange(self.qkv(a), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2))
        attn = F.scaled_dot_product_attention(
            q,
            keys,
            values,
            attn_mask=attn_mask,
            is_causal=causal and attn_mask is None and past is None,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        h = h + (1 + gate1) * self.dropout(self.proj(rearrange(attn, "b h l d -> b l (h d)")))
        m = self.norm2(h) * (1 + scale2) + shift2
        return h + (1 + gate2) * self.dropout(self.mlp(m)), (k, v)


class TokenTransformer(nn.Module):
    """Transformer over token sequences returning per-position logits.

    Args:
        vocab_size: number of input token ids (e.g. ``V + 1`` with a mask or BOS token).
        out_vocab: number of output logits per position (``V``: never the mask token).
        width, depth, heads: model size.
        max_len: longest sequence (learned positions only need it).
        dropout: dropout rate.
        causal: causal self-attention (autoregressive baseline).
        time_conditioning: adaLN conditioning on ``t`` (required input then).
        validate: check the values of ids, times, learned positions and labels in ``forward``
            (one host read-back per call; shapes and dtypes are always checked). The value
            checks are also skipped inside :func:`gm.checks.inputs_checked` (the samplers' and
            losses' model calls on inputs they checked once) and under ``torch.compile``, so
            a compiled forward has no host read-back and no graph break.
        positions: ``"rotary"`` or ``"learned"``.
        num_classes: class-conditional on ``label`` (a learned embedding added at every
            position) when > 0.
        null_label: also accept :data:`gm.guidance.NULL_LABEL` (-1), "no condition", for
            classifier-free guidance (train with :func:`gm.guidance.drop_labels`).
    """

    def __init__(
        self,
        vocab_size: int,
        out_vocab: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        max_len: int = 1024,
        dropout: float = 0.0,
        causal: bool = False,
        time_conditioning: bool = True,
        positions: str = "rotary",
        validate: bool = True,
        num_classes: int = 0,
        null_label: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("out_vocab", out_vocab),
            ("width", width),
            ("depth", depth),
            ("heads", heads),
            ("max_len", max_len),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        if positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', got {positions!r}")
        self.vocab_size, self.out_vocab, self.causal, self.max_len = vocab_size, out_vocab, causal, max_len
        # check id and time values in forward (one host read-back); off for loops over checked data on GPUs
        self.validate = bool(validate)
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(max_len, width) if positions == "learned" else None
        self.rope = _RotaryCache(width // heads, table_len=max_len) if positions == "rotary" else None
        self.time_mlp = (
            nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width)) if time_conditioning else None
        )
        self.blocks = nn.ModuleList(_Block(width, heads, dropout, time_conditioning) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_vocab)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if null_label and not num_classes:
            raise ValueError("null_label needs a class-conditional model (num_classes > 0)")
        self.num_classes, self.null_label = num_classes, bool(null_label)
        self.label_embedding = nn.Embedding(num_classes + self.null_label, width) if num_classes else None

    def _label_rows(
        self, label: Tensor | int | None, batch_shape: torch.Size, device: torch.device, checks: Checks | None
    ) -> Tensor:
        """The label embedding's row per sequence, ``(prod(batch_shape),)``: ``label`` itself,
        :data:`gm.guidance.NULL_LABEL` mapped to row ``num_classes`` when the model has a null
        label. The messages of :func:`gm.guidance.label_rows`, but the value range is added to
        ``checks`` (read back with the ids and times, or skipped with ``checks=None``) instead
        of read back here: one read-back per call, none under ``torch.compile``."""
        if label is None:
            raise ValueError(f"label is required: the model is conditional on {self.num_classes} classes")
        label = torch.as_tensor(label, device=device)
        if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}")
        if tuple(label.shape) != tuple(batch_shape)[: label.dim()]:
            raise ValueError(
                f"label must have a shape that is a prefix of the batch shape {tuple(batch_shape)}, "
                f"got {tuple(label.shape)}"
            )
        low = NULL_LABEL if self.null_label else 0
        if checks is not None and label.numel():

            def explain(label: Tensor = label) -> str:
                allowed = f"[0, {self.num_classes})" + (" or -1 (the null label)" if self.null_label else "")
                return f"label values must be in {allowed}, got [{int(label.min())}, {int(label.max())}]"

            # shifted so that the allowed range is [0, num_classes - low)
            checks.add(index_out_of_range(label.long() - low, self.num_classes - low), explain)
        if self.null_label:
            label = torch.where(label == NULL_LABEL, self.num_classes, label)
        label = label.reshape(label.shape + (1,) * (len(batch_shape) - label.dim())).expand(batch_shape)
        return label.reshape(-1)

    def _time_features(self, t: Tensor) -> Tensor:
        dtype = self.embed.weight.dtype
        freqs = torch.exp(-math.log(1000.0) * torch.arange(32, device=t.device, dtype=dtype) / 32)
        arg = 1000.0 * t.to(dtype)[:, None] * freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def forward(
        self,
        tokens: Tensor,
        t: Tensor | float | None = None,
        padding_mask: Tensor | None = None,
        label: Tensor | int | None = None,
        *,
        attn_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_kv: list[tuple[Tensor, Tensor]] | None = None,
        return_kv: bool = False,
    ) -> Tensor | tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Logits ``(*batch, L, out_vocab)`` of token ids ``tokens`` ``(*batch, L)`` (int64 or int32,
        in ``[0, vocab_size)``) at times ``t`` in [0, 1]: a float, or per-sequence times whose
        shape is a prefix of the batch shape (``(B,)`` for tokens ``(B, C, L)``: one time per
        sample). ``padding_mask`` is boolean ``(*batch, L)``, True at padding.

        Structured attention and caching (block diffusion, :mod:`dfm.block`), keyword-only:
        ``attn_mask`` is boolean ``(L, P + L)`` (True: query may attend to key), ``position_ids``
        the ``(L,)`` positions of the tokens (default ``P .. P + L - 1``), ``past_kv`` a list of
        cached ``(keys, values)`` per layer, ``(prod(batch), heads, P, head_dim)``, attended
        before this call's own, and ``return_kv=True`` also returns this call's keys and values
        per layer (to extend a cache).

        Raises ``ValueError`` naming the argument for a wrong type, dtype or shape, and (value
        checks, see ``validate``) for ids, learned positions or labels out of range and times
        that are NaN or outside [0, 1], all in one host read-back.
        """
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(
                f"tokens must be integer ids (an int64 or int32 tensor), got "
                f"{tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__}"
            )
        if tokens.dim() < 1:
            raise ValueError("tokens must have a sequence dimension")
        batch_shape, length = tokens.shape[:-1], tokens.shape[-1]
        if length == 0:
            raise ValueError(f"tokens must hold at least one position, got shape {tuple(tokens.shape)}")
        if self.pos is not None and length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        # Every value check (ids, times, positions, labels) goes into one Checks, read back once
        # below; none at all with validate=False, inside gm.checks.inputs_checked() (loops the
        # library drives over checked inputs) or under torch.compile (a read-back breaks the graph).
        checks = Checks() if value_checks_on(self.validate) else None
        if checks is not None:
            checks.add(
                index_out_of_range(tokens, self.vocab_size),
                lambda: describe_index_range(tokens, self.vocab_size, "token"),
            )
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            given = t
            t = broadcast_time(t, batch_shape, dtype=self.embed.weight.dtype, device=tokens.device)
            if checks is not None:
                # the times as given (not expanded), so that a message counts them right
                given = t if not isinstance(given, Tensor) else given.to(dtype=t.dtype, device=t.device)
                checks.add(time_out_of_range(given), lambda: describe_time_range(given))
        x = tokens.reshape(-1, length)
        past_len = 0 if past_kv is None else self._check_past(past_kv, x.shape[0])
        if position_ids is None:
            if self.pos is not None and past_len + length > self.max_len:  # known on the host
                raise ValueError(f"position {past_len + length - 1} exceeds max_len {self.max_len}")
            position_ids = torch.arange(past_len, past_len + length, device=x.device)
        elif (
            not isinstance(position_ids, Tensor) or position_ids.shape != (length,) or position_ids.is_floating_point()
        ):
            raise ValueError(
                f"position_ids must be an integer tensor of shape ({length},), got "
                f"{tuple(position_ids.shape) if isinstance(position_ids, Tensor) else type(position_ids).__name__}"
            )
        elif self.pos is not None and checks is not None:  # learned positions: rows of a table

            def explain_positions(ids: Tensor = position_ids) -> str:
                if int(ids.max()) >= self.max_len:
                    return f"position {int(ids.max())} exceeds max_len {self.max_len}"
                return f"position_ids must be >= 0, got {int(ids.min())}"

            checks.add(index_out_of_range(position_ids, self.max_len), explain_positions)
        rows = None
        if self.label_embedding is not None:
            rows = self._label_rows(label, batch_shape, x.device, checks)
        elif label is not None:
            raise ValueError("label given, but the model is unconditional (num_classes=0)")
        if attn_mask is not None:
            if (
                not isinstance(attn_mask, Tensor)
                or attn_mask.dtype != torch.bool
                or attn_mask.shape != (length, past_len + length)
            ):
                raise ValueError(
                    f"attn_mask must be a bool tensor of shape {(length, past_len + length)}, got "
                    f"{tuple(attn_mask.shape) if isinstance(attn_mask, Tensor) else type(attn_mask).__name__}"
                )
        if padding_mask is not None:
            if past_kv is not None:
                raise ValueError("padding_mask cannot be combined with past_kv")
            if (
                not isinstance(padding_mask, Tensor)
                or padding_mask.shape != tokens.shape
                or padding_mask.dtype != torch.bool
            ):
                raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(tokens.shape)}")
        if checks is not None:
            checks.run()  # one host read-back for ids, times, positions and labels
        h = self.embed(x)
        if self.pos is not None:
            h = h + self.pos(position_ids)
        if rows is not None:
            assert self.label_embedding is not None  # rows are only computed when it exists
            h = h + self.label_embedding(rows)[:, None, :]
        cond = None
        if self.time_mlp is not None:
            assert isinstance(t, Tensor)  # broadcast_time above
            cond = self.time_mlp(self._time_features(t.reshape(-1)))
        if padding_mask is not None:
            keep = ~padding_mask.reshape(-1, length)
            structure = (
                attn_mask
                if attn_mask is not None
                else torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
                if self.causal
                else None
            )
            attn_mask = keep[:, None, None, :] if structure is None else keep[:, None, None, :] & structure
        elif attn_mask is None and self.causal and past_kv is not None:
            attn_mask = torch.ones(length, past_len + length, dtype=torch.bool, device=x.device).tril(past_len)
        rope = self.rope(position_ids, h.dtype) if self.rope is not None else None
        new_kv = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, cond, rope, attn_mask, self.causal, None if past_kv is None else past_kv[i])
            new_kv.append(kv)
        logits = self.head(self.norm(h)).reshape(*batch_shape, length, self.out_vocab)
        return (logits, new_kv) if return_kv else logits

    def _check_past(self, past_kv: object, rows: int) -> int:
        """The cached length of ``past_kv`` (a ``ValueError`` unless it is one ``(keys, values)``
        pair per layer for ``rows`` sequences)."""
        if not isinstance(past_kv, (list, tuple)) or len(past_kv) != len(self.blocks):
            raise ValueError(f"past_kv must be a list of {len(self.blocks)} (keys, values) pairs, one per layer")
        heads = cast(_Block, self.blocks[0]).heads
        head_dim = self.embed.weight.shape[1] // heads
        expected = (rows, heads)
        sizes = set()
        for pair in past_kv:
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or any(
                    not isinstance(z, Tensor)
                    or z.dim() != 4
                    or tuple(z.shape[:2]) != expected
                    or z.shape[3] != head_dim
                    for z in pair
                )
                or pair[0].shape != pair[1].shape
            ):
                raise ValueError(
                    f"past_kv entries must be (keys, values) of shape ({rows}, {expected[1]}, P, {head_dim})"
                )
            sizes.add(pair[0].shape[2])
        if len(sizes) != 1:
            raise ValueError(f"past_kv layers cache different lengths {sorted(sizes)}")
        return sizes.pop()
