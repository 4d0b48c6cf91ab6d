"""Templates for conditional generation with masked models: a prompt to complete, or a
sequence with holes to fill. Both return ``(x0, fixed)`` for :meth:`dfm.CTMCSolver.sample`
and :meth:`dfm.BlockDiffusion.sample`: ``x0`` holds the given tokens and the mask id at the
positions to generate, ``fixed`` is True at the given positions."""

from __future__ import annotations

import torch
from torch import Tensor

from dfm.path import MixturePath

__all__ = ["HOLE", "prompt_template", "infill_template"]

HOLE = -1  # the id of a position to generate in an infilling template


def _check_ids(ids: object, name: str) -> Tensor:
    if not isinstance(ids, Tensor) or ids.dim() != 1 or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D integer tensor of token ids, got "
            f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}"
        )
    return ids.long()


def _check_mask_path(path: object) -> MixturePath:
    if not isinstance(path, MixturePath) or path.kind != "mask":
        raise ValueError(f"path must be a dfm.MixturePath with source='mask', got {path!r}")
    return path


def _check_batch(batch: object) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    return batch


def prompt_template(prompt: Tensor, length: int, path: MixturePath, batch: int = 1) -> tuple[Tensor, Tensor]:
    """``batch`` copies of a length-``length`` sequence that starts with ``prompt`` (fixed) and is
    masked after it.

    Raises:
        ValueError: naming the argument, for a prompt that is not 1-D token ids of the path's
            vocabulary, or that does not leave a position to generate (``len(prompt) >= length``:
            "longer than the context").
    """
    path = _check_mask_path(path)
    prompt = _check_ids(prompt, "prompt")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if len(prompt) >= length:
        raise ValueError(
            f"prompt has {len(prompt)} tokens: it must be shorter than the context length {length} to "
            "leave something to generate"
        )
    path.check_tokens(prompt, "prompt", allow_mask=False)
    template = torch.full((length,), HOLE, dtype=torch.long, device=prompt.device)
    template[: len(prompt)] = prompt
    return infill_template(template, path, _check_batch(batch))


def infill_template(template: Tensor, path: MixturePath, batch: int = 1) -> tuple[Tensor, Tensor]:
    """``batch`` copies of ``template`` (token ids, :data:`HOLE` = -1 at the positions to fill).

    Raises:
        ValueError: naming the argument, for a template that is not 1-D integer ids, ids outside
            the vocabulary (other than holes), or no hole.
    """
    path = _check_mask_path(path)
    template = _check_ids(template, "template")
    holes = template == HOLE
    if not bool(holes.any()):
        raise ValueError("template has no hole (id -1): nothing to generate")
    given = torch.where(holes, torch.zeros_like(template), template)
    path.check_tokens(given, "template", allow_mask=False)
    assert path.mask_id is not None  # a mask-source path (_check_mask_path)
    x0 = torch.where(holes, torch.full_like(template, path.mask_id), template)
    batch = _check_batch(batch)
    return x0.expand(batch, -1).clone(), (~holes).expand(batch, -1).clone()
