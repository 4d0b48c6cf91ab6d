"""Numerically safe scalar functions shared by the manifolds.

Every function takes the *squared* angle where a Taylor branch is needed, so values and
gradients stay finite at zero, and uses a ``torch.where`` on a safe argument so that the
unused branch never produces NaN gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor


def taylor_threshold(dtype: torch.dtype) -> float:
    """Below this squared angle the 3-term Taylor series is exact to machine precision."""
    return {torch.float64: 1e-4, torch.float32: 1e-2, torch.float16: 1e-1, torch.bfloat16: 1e-1}.get(dtype, 1e-2)


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def point_tolerance(dtype: torch.dtype) -> float:
    """Tolerance for "on the manifold" checks: ~1000 ulps of the dtype."""
    return 1000.0 * torch.finfo(dtype).eps


def safe_sqrt(sq: Tensor) -> Tensor:
    """sqrt with a zero (not infinite) gradient at 0."""
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def safe_norm(v: Tensor, dim: int | tuple[int, ...] = -1, keepdim: bool = False) -> Tensor:
    """Euclidean norm; torch's norm already has a zero (sub)gradient and a zero JVP at the
    zero vector."""
    return torch.linalg.vector_norm(v, dim=dim, keepdim=keepdim)


def last_dim_dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1, keepdim=True)`` computed as a product with a ones vector: the same
    sum, but torch's CPU reduction over a short last dim (3 on S^2) is several times slower
    than a matrix-vector product."""
    ones = torch.ones(a.shape[-1], 1, dtype=a.dtype, device=a.device)
    return (a * b) @ ones


def may_contain_true(mask: Tensor) -> bool:
    """Whether ``mask`` may have a True entry, to skip the fix-up of rare special cases.

    Checked exactly on CPU, where it costs a few microseconds; assumed True on accelerators,
    where reading the answer back would force a host synchronisation, and under
    ``torch.compile``, where it would break the graph (the fix-up then always runs, which is
    correct, just not skipped)."""
    return mask.device.type != "cpu" or torch.compiler.is_compiling() or bool(mask.any())


def _branch(theta_sq: Tensor, series: Tensor, exact_fn) -> Tensor:
    small = theta_sq < taylor_threshold(theta_sq.dtype)
    safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    return torch.where(small, series, exact_fn(safe))


def sinc_sq(theta_sq: Tensor) -> Tensor:
    """sin(theta) / theta as a function of theta^2."""
    t = theta_sq
    series = 1 - t / 6 + t * t / 120
    return _branch(t, series, lambda s: torch.sin(torch.sqrt(s)) / torch.sqrt(s))


def cos_sq(theta_sq: Tensor) -> Tensor:
    """cos(theta) as a function of theta^2 (smooth at 0)."""
    t = theta_sq
    series = 1 - t / 2 + t * t / 24
    return _branch(t, series, lambda s: torch.cos(torch.sqrt(s)))


def one_minus_cos_over_sq(theta_sq: Tensor) -> Tensor:
    """(1 - cos(theta)) / theta^2 as a function of theta^2."""
    t = theta_sq
    series = 0.5 - t / 24 + t * t / 720
    # 1 - cos = 2 sin^2(theta/2) avoids cancellation.
    return _branch(t, series, lambda s: 2 * torch.sin(torch.sqrt(s) / 2) ** 2 / s)


def theta_over_sin(theta: Tensor) -> Tensor:
    """theta / sin(theta) for theta in [0, pi), with a Taylor branch at 0."""
    t = theta * theta
    series = 1 + t / 6 + 7 * t * t / 360
    return _branch(t, series, lambda s: torch.sqrt(s) / torch.sin(torch.sqrt(s)))
