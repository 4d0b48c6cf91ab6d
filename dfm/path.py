r"""Mixture probability paths for discrete flow matching (Gat et al., 2024).

Each token of :math:`x_t` is independently the data token :math:`x_1^i` with probability
:math:`\kappa_t` and a draw from the source :math:`p_0` otherwise:

.. math:: p_t(x^i \mid x_0, x_1) = \kappa_t\,\delta_{x_1^i}(x^i) + (1 - \kappa_t)\,\delta_{x_0^i}(x^i).

With ``source="mask"`` the source is a point mass on an extra token ``mask_id = vocab_size``
(models take ``vocab_size + 1`` input ids and output ``vocab_size`` logits); with
``source="uniform"`` it is uniform over the vocabulary; a tensor gives any per-token source
distribution (shape ``(V,)`` or ``(L, V)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from gm.checks import (
    Checks,
    broadcast_time,
    describe_index_range,
    describe_time_range,
    index_out_of_range,
    time_out_of_range,
    value_checks_on,
)
from gm.path import PathSample, ProbPath
from gm.schedulers import ConvexScheduler, LinearScheduler

__all__ = ["MixturePath"]


class MixturePath(ProbPath):
    """Mixture path between a source over tokens and the data.

    Args:
        vocab_size: number of data tokens ``V`` (ids ``0 .. V-1``).
        source: ``"mask"``, ``"uniform"`` or a probability tensor ``(V,)`` / ``(L, V)``.
        scheduler: the :math:`\\kappa_t` schedule (linear by default).
        validate: check token ranges and times in :meth:`sample` (one host read-back; skipped
            under ``torch.compile`` and inside :func:`gm.checks.inputs_checked`).
    """

    def __init__(
        self,
        vocab_size: int,
        source: str | Tensor = "mask",
        scheduler: ConvexScheduler | None = None,
        *,
        validate: bool = True,
    ) -> None:
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.validate = bool(validate)  # check token ranges and times in sample (one host read-back)
        if scheduler is not None and not isinstance(scheduler, ConvexScheduler):
            raise ValueError(f"scheduler must be a gm.ConvexScheduler (kappa_t), got {scheduler!r}")
        self.scheduler = scheduler if scheduler is not None else LinearScheduler()
        self._kappa_ends: tuple[object, tuple[float, float]] | None = None
        self.kappa_range()  # computed here, on the host, not in a training or sampling step
        self.source_probs: Tensor | None = None
        if isinstance(source, Tensor):
            probs = source.detach().to(torch.float64)
            if probs.dim() not in (1, 2) or probs.shape[-1] != vocab_size:
                raise ValueError(
                    f"source tensor must have shape (V,) or (L, V) with V={vocab_size}, got {tuple(probs.shape)}"
                )
            if bool((probs < 0).any()) or not bool(
                torch.allclose(probs.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6)
            ):
                raise ValueError("source tensor must hold nonnegative probabilities summing to 1 over the last dim")
            self.kind = "custom"
            self.source_probs = (probs / probs.sum(-1, keepdim=True)).to(
                source.dtype if source.is_floating_point() else torch.float32
            )
        elif source in ("mask", "uniform"):
            self.kind = source
        else:
            raise ValueError(f"source must be 'mask', 'uniform' or a probability tensor, got {source!r}")

    def kappa_range(self) -> tuple[float, float]:
        """:math:`(\\kappa_0, \\kappa_1)` of the scheduler as Python floats, computed once per
        scheduler (on the CPU, when the path is built), so that losses map masking rates back
        to times without reading anything back from the device."""
        cached = getattr(self, "_kappa_ends", None)  # None also for paths pickled before it existed
        if cached is None or cached[0] is not self.scheduler:
            low, high = (
                float(self.scheduler.kappa(torch.tensor(v, dtype=torch.float64), validate=False)) for v in (0.0, 1.0)
            )
            cached = self._kappa_ends = (self.scheduler, (low, high))
        return cached[1]

    @property
    def mask_id(self) -> int | None:
        """Id of the mask token (``vocab_size``) for the mask source, else ``None``."""
        return self.vocab_size if self.kind == "mask" else None

    @property
    def input_vocab_size(self) -> int:
        """Number of token ids a model must accept: ``V + 1`` with a mask token, else ``V``."""
        return self.vocab_size + (self.kind == "mask")

    def source_distribution(self, length: int | None = None, *, device=None, dtype=torch.float32) -> Tensor | None:
        """The source as probabilities over the data vocabulary, ``None`` for the mask source."""
        if self.kind == "mask":
            return None
        if self.kind == "uniform":
            return torch.full((self.vocab_size,), 1.0 / self.vocab_size, device=device, dtype=dtype)
        assert self.source_probs is not None  # set for the custom source
        return self.source_probs.to(device=device, dtype=dtype)

    def sample_source(
        self, shape: tuple[int, ...] | torch.Size, *, device=None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``x0`` of ``shape`` (last dim = sequence length) from the source."""
        shape = tuple(shape)
        if self.kind == "mask":
            return torch.full(shape, self.vocab_size, dtype=torch.long, device=device)
        if self.kind == "uniform":
            return torch.randint(0, self.vocab_size, shape, device=device, generator=generator)
        assert self.source_probs is not None  # set for the custom source
        probs = self.source_probs.to(device)
        if probs.dim() == 1:
            n = max(1, int(torch.tensor(shape).prod()))
            return torch.multinomial(probs, n, replacement=True, generator=generator).reshape(shape)
        if shape[-1] != probs.shape[0]:
            raise ValueError(f"per-position source has length {probs.shape[0]}, asked for shape {shape}")
        n = max(1, int(torch.tensor(shape[:-1]).prod()))
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (L, n)
        return draws.T.reshape(shape)

    def check_tokens(self, x: Tensor, name: str, *, allow_mask: bool, checks: Checks | None = None) -> None:
        """A ``ValueError`` naming ``name`` unless ``x`` holds integer token ids with a sequence dim
        in ``[0, V)`` (``[0, V]`` with the mask when ``allow_mask``). With ``checks`` the range check
        is added there (read back later with the others) instead of read back now."""
        if not isinstance(x, Tensor) or x.dtype not in (torch.long, torch.int32, torch.int64, torch.int16, torch.uint8):
            raise ValueError(f"{name} must be an integer tensor of token ids, got {getattr(x, 'dtype', type(x))}")
        if x.dim() < 1:
            raise ValueError(f"{name} must have a sequence dimension, got a scalar")
        high = self.input_vocab_size if allow_mask else self.vocab_size
        own = Checks() if checks is None else checks
        own.add(index_out_of_range(x, high), lambda: describe_index_range(x, high, name))
        if checks is None:
            own.run()

    def sample(
        self,
        x0: Tensor | None,
        x1: Tensor,
        t: Tensor,
        padding_mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Draw :math:`x_t`: each token is ``x1`` with probability :math:`\\kappa_t`, else ``x0``.

        Args:
            x0: source tokens (``None``: drawn with :meth:`sample_source`).
            x1: data tokens ``(*batch, L)``.
            t: times in [0, 1], a float or a tensor whose shape is a prefix of the batch shape
                ``x1.shape[:-1]`` (one time per sample; broadcast over the sequence).
            padding_mask: boolean ``(*batch, L)``, True at padding; those positions keep ``x1``.
        """
        # value checks off with validate=False, under torch.compile and in gm.checks.inputs_checked()
        checks = Checks() if value_checks_on(self.validate) else None
        self.check_tokens(x1, "x1", allow_mask=False, checks=checks or Checks())
        if x0 is None:
            x0 = self.sample_source(x1.shape, device=x1.device, generator=generator)
        else:
            if not isinstance(x0, Tensor) or x0.shape != x1.shape:
                raise ValueError(
                    f"x0 and x1 must have the same shape, got {tuple(getattr(x0, 'shape', ()))} and {tuple(x1.shape)}"
                )
            self.check_tokens(x0, "x0", allow_mask=True, checks=checks or Checks())
        given = t
        t = broadcast_time(
            t,
            x1.shape[:-1],
            dtype=t.dtype if isinstance(t, Tensor) and t.is_floating_point() else torch.get_default_dtype(),
            device=x1.device,
        )
        if checks is not None:
            # the times as given, not expanded over the sequence dims, so messages count them right
            given = given.to(dtype=t.dtype, device=t.device) if isinstance(given, Tensor) else t
            checks.add(time_out_of_range(given), lambda: describe_time_range(given))
            checks.run()  # ids and times: one host read-back
        kappa = self.scheduler.kappa(t, validate=False)[..., None]
        keep = torch.rand(x1.shape, device=x1.device, generator=generator, dtype=kappa.dtype) < kappa
        if padding_mask is not None:
            if padding_mask.shape != x1.shape or padding_mask.dtype != torch.bool:
                raise ValueError(f"padding_mask must be a bool tensor of shape {tuple(x1.shape)}")
            keep = keep | padding_mask
        return PathSample(t=t, x0=x0, x1=x1, x_t=torch.where(keep, x1, x0))
