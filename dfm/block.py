r"""Block diffusion (semi-autoregressive masked diffusion; Arriola et al., 2025, BD3-LM).

A sequence of length :math:`L` is cut into :math:`L/b` blocks of :math:`b` positions. Each
block is a masked-diffusion model conditioned on the clean earlier blocks, so the likelihood
factorises over blocks and the bound is a sum of per-block masked-diffusion ELBOs
(:mod:`dfm.masking`), every block with its own masking rate:

.. math::
    -\log p(x) = \sum_k -\log p(x^{(k)} \mid x^{(<k)})
    \le \sum_k \mathbb{E}_{m_k \sim U\{1..b\}}\Big[\frac{b}{m_k}
        \sum_{i \in S_{m_k}} -\log p_\theta(x^i \mid x^{(k)}_{\bar S_{m_k}}, x^{(<k)})\Big].

:math:`b = 1` is autoregressive (one masked position per block, weight 1: the bound is the
exact likelihood, deterministically); :math:`b = L` is the whole-sequence masked model.

Training is vectorised as in the paper: the noisy sequence and the clean one go through the
transformer side by side (:math:`2L - b` tokens; the last clean block is seen by no one and
left out), both with positions :math:`0..L-1`, under one attention mask
(:func:`block_attention_mask`): a noisy token sees the noisy tokens of its own block and the
clean tokens of earlier blocks; a clean token sees the clean tokens of its own and earlier
blocks (block-causal). Sampling goes block by block with the mask CTMC of
:class:`dfm.CTMCSolver` inside the current block, the clean prefix's keys and values cached:
a finished block is passed once through the network (the same attention pattern as a noisy
block) and its keys and values appended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dfm.loss import ELBOEstimate, MaskedDiffusionLoss, elbo_estimate
from dfm.path import MixturePath
from dfm.solver import CTMCSolver
from dfm.transformer import TokenTransformer, append_kv

__all__ = ["block_attention_mask", "BlockDiffusion", "BlockDiffusionTransformer"]


def _check_block_size(block_size: object, length: int) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 or length % block_size:
        raise ValueError(
            f"block_size must be a positive integer dividing the sequence length {length}, got {block_size!r}"
        )
    return block_size


def block_attention_mask(length: int, block_size: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``(2L - b, 2L - b)`` attention mask of the vectorised block-diffusion pass (True:
    the query may attend to the key). Rows and columns ``0..L-1`` are the noisy tokens,
    ``L..2L-b-1`` the clean tokens of blocks ``0..L/b - 2`` (position ``L + j`` is clean token
    ``j``). Noisy token ``i`` sees noisy ``j`` iff ``block(i) == block(j)`` and clean ``j`` iff
    ``block(j) < block(i)``; clean ``i`` sees clean ``j`` iff ``block(j) <= block(i)``, and no
    noisy token."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    b = _check_block_size(block_size, length)
    noisy = torch.arange(length, device=device) // b
    clean = torch.arange(length - b, device=device) // b
    noisy_noisy = noisy[:, None] == noisy[None, :]
    noisy_clean = clean[None, :] < noisy[:, None]
    clean_noisy = torch.zeros(length - b, length, dtype=torch.bool, device=device)
    clean_clean = clean[None, :] <= clean[:, None]
    return torch.cat([torch.cat([noisy_noisy, noisy_clean], 1), torch.cat([clean_noisy, clean_clean], 1)], 0)


class BlockDiffusionTransformer(nn.Module):
    """A :class:`dfm.TokenTransformer` (rotary positions, no time input: with the mask source the
    posterior given :math:`x_t` does not depend on :math:`t`) run as a block-diffusion model.

    ``forward(x_t, x1)``: logits ``(*batch, L, V)`` of every noisy position given its block of
    ``x_t`` and the clean earlier blocks of ``x1`` (training and the ELBO). For sampling,
    ``block_logits(x_block, cache, start)`` gives the logits of one noisy block starting at
    position ``start`` given the cached clean prefix, and ``extend(x_block, cache, start)``
    appends a finished block's keys and values to the cache (``None``: empty).

    Args:
        vocab_size: data tokens ``V`` (the mask is id ``V``).
        block_size: positions per block ``b``.
        width, depth, heads, max_len, dropout: as :class:`dfm.TokenTransformer`.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        max_len: int = 1024,
        dropout: float = 0.0,
        validate: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.block_size = block_size
        self.vocab_size = vocab_size
        self.net = TokenTransformer(
            vocab_size + 1,
            vocab_size,
            width=width,
            depth=depth,
            heads=heads,
            max_len=max_len,
            dropout=dropout,
            causal=False,
            time_conditioning=False,
            positions="rotary",
            validate=validate,
        )
        self._masks: dict[tuple[int, str], Tensor] = {}

    def _mask(self, length: int, device: torch.device) -> Tensor:
        key = (length, str(device))
        if key not in self._masks:
            self._masks[key] = block_attention_mask(length, self.block_size, device)
        return self._masks[key]

    def forward(self, x_t: Tensor, x1: Tensor) -> Tensor:
        if not isinstance(x_t, Tensor) or not isinstance(x1, Tensor) or x_t.shape != x1.shape or x_t.dim() < 1:
            raise ValueError(
                f"x_t and x1 must be token tensors of the same shape (..., L), got "
                f"{tuple(getattr(x_t, 'shape', ()))} and {tuple(getattr(x1, 'shape', ()))}"
            )
        length = x_t.shape[-1]
        b = _check_block_size(self.block_size, length)
        tokens = torch.cat([x_t, x1[..., : length - b]], dim=-1)
        positions = torch.cat([torch.arange(length, device=x_t.device), torch.arange(length - b, device=x_t.device)])
        logits = self.net(tokens, attn_mask=self._mask(length, x_t.device), position_ids=positions)
        return logits[..., :length, :]

    def _cached(self, x_block: Tensor, cache: list[tuple[Tensor, Tensor]] | None, start: int, keep: bool):
        if not isinstance(x_block, Tensor) or x_block.dim() != 2:
            raise ValueError(f"x_block must be tokens of shape (B, b), got {tuple(getattr(x_block, 'shape', ()))}")
        cached = 0 if cache is None else cache[0][0].shape[2]
        if cached != start:
            raise ValueError(f"the cache holds {cached} positions, but the block starts at {start}")
        positions = torch.arange(start, start + x_block.shape[-1], device=x_block.device)
        return self.net(x_block, position_ids=positions, past_kv=cache, return_kv=keep)

    def block_logits(self, x_block: Tensor, cache: list[tuple[Tensor, Tensor]] | None, start: int) -> Tensor:
        """Logits ``(B, b, V)`` of the noisy block ``x_block`` ``(B, b)`` at positions
        ``start .. start + b - 1`` given the cached clean prefix of length ``start``."""
        return self._cached(x_block, cache, start, keep=False)

    def extend(
        self, x_block: Tensor, cache: list[tuple[Tensor, Tensor]] | None, start: int
    ) -> list[tuple[Tensor, Tensor]]:
        """The cache with the clean block ``x_block`` (at ``start``) appended, per layer."""
        _, kv = self._cached(x_block, cache, start, keep=True)
        return append_kv(cache, kv)


class BlockDiffusion:
    """Block diffusion with block size ``b``: the training loss, the ELBO and block-by-block
    sampling (module docstring).

    A model is any callable ``model(x_t, x1) -> logits (B, L, V)`` for the loss and the ELBO;
    sampling also needs ``model.block_logits(x_block, cache, start)`` and
    ``model.extend(x_block, cache, start) -> cache`` (:class:`BlockDiffusionTransformer`; the
    cache is opaque to this class and starts as ``None``).

    Args:
        path: a mask-source :class:`MixturePath`.
        block_size: positions per block.
        estimator, times, mask_rate_range, weighting, validate: training options of
            :class:`dfm.MaskedDiffusionLoss` (the ELBO always uses the full range).
    """

    def __init__(
        self,
        path: MixturePath,
        block_size: int,
        *,
        estimator: str = "count",
        times: str = "stratified",
        mask_rate_range: tuple[float, float] = (0.0, 1.0),
        weighting: str = "elbo",
        validate: bool = True,
    ) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self.loss_fn = MaskedDiffusionLoss(
            path,
            estimator=estimator,
            times=times,
            mask_rate_range=mask_rate_range,
            weighting=weighting,
            block_size=block_size,
            validate=validate,
        )
        self.path, self.block_size = path, block_size

    def loss(
        self, model: Callable[[Tensor, Tensor], Tensor], x1: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """The training loss of a batch ``x1`` ``(B, L)`` (one model call on ``2L - b`` tokens)."""
        _check_block_size(self.block_size, x1.shape[-1])
        return self.loss_fn(model, x1, generator)

    @torch.no_grad()
    def elbo(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        x1: Tensor,
        *,
        n_draws: int = 1,
        n_chars: int | None = None,
        generator: torch.Generator | None = None,
        estimator: str = "count",
        times: str = "stratified",
    ) -> ELBOEstimate:
        """The negative ELBO of ``x1`` ``(B, L)`` (see :func:`dfm.mask_elbo` for the arguments)."""
        _check_block_size(self.block_size, x1.shape[-1])
        return elbo_estimate(
            lambda batch: model(batch.x_t, x1),
            self.path,
            x1,
            group_size=self.block_size,
            n_draws=n_draws,
            n_chars=n_chars,
            generator=generator,
            estimator=estimator,
            times=times,
        )

    @torch.no_grad()
    def sample(
        self,
        model: Any,
        x0: Tensor,
        steps: int | None = None,
        *,
        fixed: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        **sampler: Any,
    ) -> Tensor:
        """Generate block by block.

        Args:
            model: a block-diffusion model with ``block_logits`` and ``extend`` (class docstring).
            x0: ``(B, L)`` template: the mask id where tokens are to be generated, data tokens
                elsewhere (a prompt, the context of an infilling template).
            steps: CTMC steps per block (default ``b``: one reveal per step on average).
            fixed: True at the positions that keep ``x0``'s tokens (default: every data token
                of ``x0``).
            generator: RNG of the draws.
            progress: a progress bar over blocks.
            **sampler: options of :meth:`dfm.CTMCSolver.sample` inside each block
                (``temperature``, ``top_k``, ``top_p``, ``unmasking``, ``dtype_categorical``,
                ``corrector``).

        Raises:
            ValueError: naming the argument, for a template that is not ``(B, L)`` tokens with
                ``L`` a multiple of ``b``, a bad ``fixed`` mask, or any sampler option.
        """
        self.path.check_tokens(x0, "x0", allow_mask=True)
        if x0.dim() != 2:
            raise ValueError(f"x0 must have shape (B, L), got {tuple(x0.shape)}")
        length = x0.shape[-1]
        b = _check_block_size(self.block_size, length)
        # compile: each block has its own cache and start, so a compiled step would compile anew per block
        for name in ("block_size", "padding_mask", "return_intermediates", "time_grid", "compile"):
            if name in sampler:
                raise ValueError(f"{name} is not an option of block-diffusion sampling")
        mask_id = self.path.mask_id
        assert mask_id is not None  # a mask-source path (checked by MaskedDiffusionLoss in __init__)
        if fixed is None:
            fixed = x0 != mask_id
        elif (
            not isinstance(fixed, Tensor)
            or fixed.shape != x0.shape
            or fixed.dtype != torch.bool
            or fixed.device != x0.device
        ):
            raise ValueError(f"fixed must be a bool tensor of shape {tuple(x0.shape)} on x0's device ({x0.device})")
        if bool((fixed & (x0 == mask_id)).any()):
            raise ValueError("x0 must hold data tokens at the fixed positions, found mask tokens there")
        steps = b if steps is None else steps
        x, cache = x0.long().clone(), None
        starts = range(0, length, b)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="blocks", leave=False)
        for start in starts:
            block, given = x[:, start : start + b], fixed[:, start : start + b]
            if not bool(given.all()):
                posterior = lambda xb, t, cache=cache, start=start: (  # noqa: E731 - bind this block's cache
                    model.block_logits(xb, cache, start)
                )
                block = CTMCSolver(self.path, posterior).sample(
                    block, steps=steps, fixed=given, generator=generator, **sampler
                )
                x[:, start : start + b] = block
            if start + b < length:
                cache = model.extend(block, cache, start)
        return x
