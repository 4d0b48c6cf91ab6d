"""Reference transformer for discrete flow matching on sequences.

Pre-LN transformer blocks with rotary (or learned) positions, optional time conditioning by
adaptive LayerNorm (adaLN-Zero: shift, scale and gate regressed from a time embedding, zero
initialised), a key padding mask, and ``causal=True`` for the same architecture as an
autoregressive baseline. Attention uses ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gm.checks import (Checks, broadcast_time, describe_index_range, describe_time_range, index_out_of_range,
                       time_out_of_range)
from gm.guidance import label_rows

__all__ = ["TokenTransformer", "apply_rotary"]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (x_{2i}, x_{2i+1}) of ``x`` (..., L, D) by position-dependent angles."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return rotated.flatten(-2)


class _RotaryCache(nn.Module):
    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, length: int, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
        pos = torch.arange(length, dtype=torch.float64, device=device)
        angles = pos[:, None] * self.inv_freq.to(device)[None, :]
        return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


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

    def forward(self, h: Tensor, cond: Tensor | None, rope: tuple[Tensor, Tensor] | None,
                attn_mask: Tensor | None, causal: bool) -> Tensor:
        if self.modulation is not None and cond is not None:
            shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None, :].chunk(6, dim=-1)
        else:
            shift1 = scale1 = shift2 = scale2 = 0.0
            gate1 = gate2 = 0.0
        a = self.norm1(h) * (1 + scale1) + shift1
        q, k, v = rearrange(self.qkv(a), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None,
                                              dropout_p=self.attn_dropout if self.training else 0.0)
        h = h + (1 + gate1) * self.dropout(self.proj(rearrange(attn, "b h l d -> b l (h d)")))
        m = self.norm2(h) * (1 + scale2) + shift2
        return h + (1 + gate2) * self.dropout(self.mlp(m))


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
        validate: check id ranges and time values in ``forward`` (one host read-back per call;
            shapes and dtypes are always checked).
        positions: ``"rotary"`` or ``"learned"``.
        num_classes: class-conditional on ``label`` (a learned embedding added at every
            position) when > 0.
        null_label: also accept :data:`gm.guidance.NULL_LABEL` (-1), "no condition", for
            classifier-free guidance (train with :func:`gm.guidance.drop_labels`).
    """

    def __init__(self, vocab_size: int, out_vocab: int, width: int = 256, depth: int = 4, heads: int = 4,
                 max_len: int = 1024, dropout: float = 0.0, causal: bool = False, time_conditioning: bool = True,
                 positions: str = "rotary", validate: bool = True, num_classes: int = 0,
                 null_label: bool = False) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("out_vocab", out_vocab), ("width", width), ("depth", depth),
                            ("heads", heads), ("max_len", max_len)):
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
        self.rope = _RotaryCache(width // heads) if positions == "rotary" else None
        self.time_mlp = (nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
                         if time_conditioning else None)
        self.blocks = nn.ModuleList(_Block(width, heads, dropout, time_conditioning) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_vocab)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if null_label and not num_classes:
            raise ValueError("null_label needs a class-conditional model (num_classes > 0)")
        self.num_classes, self.null_label = num_classes, bool(null_label)
        self.label_embedding = nn.Embedding(num_classes + self.null_label, width) if num_classes else None

    def _label_embedding(self, label: Tensor | int | None, batch_shape: torch.Size, device: torch.device) -> Tensor:
        """The label embedding per sequence, ``(prod(batch_shape), width)``."""
        label = label_rows(label, self.num_classes, self.null_label, device)
        if tuple(label.shape) != tuple(batch_shape)[:label.dim()]:
            raise ValueError(f"label must have a shape that is a prefix of the batch shape {tuple(batch_shape)}, "
                             f"got {tuple(label.shape)}")
        label = label.reshape(label.shape + (1,) * (len(batch_shape) - label.dim())).expand(batch_shape)
        return self.label_embedding(label.reshape(-1))

    def _time_features(self, t: Tensor) -> Tensor:
        dtype = self.embed.weight.dtype
        freqs = torch.exp(-math.log(1000.0) * torch.arange(32, device=t.device, dtype=dtype) / 32)
        arg = 1000.0 * t.to(dtype)[:, None] * freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def forward(self, tokens: Tensor, t: Tensor | float | None = None, padding_mask: Tensor | None = None,
                label: Tensor | int | None = None) -> Tensor:
        """Logits ``(*batch, L, out_vocab)`` of token ids ``tokens`` ``(*batch, L)`` (int64 or int32,
        in ``[0, vocab_size)``) at times ``t`` in [0, 1]: a float, or per-sequence times whose
        shape is a prefix of the batch shape (``(B,)`` for tokens ``(B, C, L)``: one time per
        sample). ``padding_mask`` is boolean ``(*batch, L)``, True at padding.

        Raises ``ValueError`` naming the argument for a wrong type, dtype or shape, ids out of
        range and times that are NaN or outside [0, 1] (ids and times in one host read-back).
        """
        if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"tokens must be integer ids (an int64 or int32 tensor), got "
                             f"{tokens.dtype if isinstance(tokens, Tensor) else type(tokens).__name__}")
        if tokens.dim() < 1:
            raise ValueError("tokens must have a sequence dimension")
        batch_shape, length = tokens.shape[:-1], tokens.shape[-1]
        if length == 0:
            raise ValueError(f"tokens must hold at least one position, got shape {tuple(tokens.shape)}")
        if self.pos is not None and length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        checks = Checks()
        checks.add(index_out_of_range(tokens, self.vocab_size),
                   lambda: describe_index_range(tokens, self.vocab_size, "token"))
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this model is time-conditioned: pass t")
            given = t
            t = broadcast_time(t, batch_shape, dtype=self.embed.weight.dtype, device=tokens.device)
            # the times as given (not expanded), so that a message counts them right
            given = t if not isinstance(given, Tensor) else given.to(dtype=t.dtype, device=t.device)
            checks.add(time_out_of_range(given), lambda: describe_time_range(given))
        if self.validate:
            checks.run()  # one host read-back for ids and times
        x = tokens.reshape(-1, length)
        h = self.embed(x)
        if self.pos is not None:
            h = h + self.pos(torch.arange(length, device=x.device))
        if self.label_embedding is not None:
            h = h + self._label_embedding(label, batch_shape, x.device)[:, None, :]
        elif label is not None:
            raise ValueError("label given, but the model is unconditional (num_classes=0)")
        cond = None
        if self.time_mlp is not None:
            cond = self.time_mlp(self._time_features(t.reshape(-1)))
        attn_mask = None
        if padding_mask is not None:
            if (not isinstance(padding_mask, Tensor) or padding_mask.shape != tokens.shape
                    or padding_mask.dtype != torch.bool):
                raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(tokens.shape)}")
            keep = ~padding_mask.reshape(-1, length)
            attn_mask = keep[:, None, None, :]
            if self.causal:
                attn_mask = attn_mask & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        rope = self.rope(length, h.dtype, h.device) if self.rope is not None else None
        for block in self.blocks:
            h = block(h, cond, rope, attn_mask, self.causal)
        logits = self.head(self.norm(h))
        return logits.reshape(*batch_shape, length, self.out_vocab)
