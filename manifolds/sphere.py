"""The unit sphere S^dim embedded in R^(dim+1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import cos_sq, last_dim_dot, may_contain_true, safe_norm, sinc_sq, theta_over_sin
from manifolds.base import RiemannianManifold

__all__ = ["Sphere"]


class Sphere(RiemannianManifold):
    r"""The unit sphere :math:`S^d = \{x \in \mathbb{R}^{d+1} : |x| = 1\}`.

    Conventions:
        points: unit vectors ``(..., dim + 1)``;
        tangent vectors at ``x``: ambient vectors ``u`` with :math:`\langle x, u\rangle = 0`;
        metric: induced from :math:`\mathbb{R}^{d+1}` (round metric), so ``dist`` is the
        great-circle angle in :math:`[0, \pi]`;
        base distribution: uniform, density :math:`1/|S^d|` (``-log(4 pi)`` on :math:`S^2`).

    Numerics: distances use :math:`2\,\mathrm{atan2}(|x-y|, |x+y|)`, accurate for close and
    near-antipodal points in float32; ``logmap`` at an exactly antipodal pair returns a
    geodesic of length :math:`\pi` in a fixed (deterministic) direction.
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.point_shape = (dim + 1,)
        self.dim = dim
        super().__init__()

    def extra_repr(self) -> str:
        return str(self.dim)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        v = u if v is None else v
        out = last_dim_dot(u, v)
        out = out if keepdim else out.squeeze(-1)
        return out.expand(torch.broadcast_shapes(out.shape, x.shape[:-1] + ((1,) if keepdim else ())))

    def projx(self, x: Tensor) -> Tensor:
        """Radial projection; the zero vector maps to the first basis vector."""
        sq = last_dim_dot(x, x)
        # On CPU one min (cheaper than a mask and an any) tells whether any row is zero; on
        # accelerators and under torch.compile the branch-free form (no host read-back).
        if x.device.type != "cpu" or torch.compiler.is_compiling() or (sq.numel() > 0 and float(sq.amin()) == 0.0):
            e0 = torch.nn.functional.pad((sq == 0).to(x.dtype), (0, x.shape[-1] - 1))
            return (x + e0) * torch.rsqrt(sq + e0[..., :1])
        return x * torch.rsqrt(sq)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.addcmul(u, last_dim_dot(x, u), x, value=-1)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u)
        theta_sq = last_dim_dot(u, u)
        y = cos_sq(theta_sq) * x + sinc_sq(theta_sq) * u
        # exp stays on the sphere analytically; renormalise away rounding drift.
        return y / safe_norm(y, keepdim=True)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        self._check_args(x=x, y=y)
        return 2 * torch.atan2(safe_norm(x - y, keepdim=keepdim), safe_norm(x + y, keepdim=keepdim))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y)
        d = y - x
        # Component of y orthogonal to x, written via d = y - x to avoid cancellation.
        v = torch.addcmul(d, last_dim_dot(x, d), x, value=-1)
        # A second projection: near the antipode |v| is tiny and theta / sin(theta) large, so the
        # rounding left in v's normal component (~eps |d|) would be amplified by that ratio
        # (a float32 log 1e-4 off the tangent space); after this pass it is ~eps |v|.
        v = torch.addcmul(v, last_dim_dot(x, v), x, value=-1)
        theta = 2 * torch.atan2(safe_norm(d, keepdim=True), safe_norm(x + y, keepdim=True))
        sin_theta = safe_norm(v, keepdim=True)
        near_pi = theta > 3.0
        # Exactly antipodal: every direction is a minimising geodesic; pick a fixed one.
        degenerate = near_pi & (sin_theta <= 4 * torch.finfo(x.dtype).eps)
        # Near pi, theta / sin(theta) is large but finite while sin(theta) > 0; the masked
        # denominators keep unused branches (and their gradients) finite.
        use_ratio = near_pi & ~degenerate
        scale = torch.where(
            use_ratio,
            theta / torch.where(use_ratio, sin_theta, torch.ones_like(sin_theta)),
            theta_over_sin(torch.where(near_pi, torch.zeros_like(theta), theta)),
        )
        log = scale * v
        return torch.where(degenerate, theta * self._fixed_unit_tangent(x), log)

    @staticmethod
    def _fixed_unit_tangent(x: Tensor) -> Tensor:
        """A deterministic unit tangent at x: e_k - x_k x for the coordinate k with the smallest
        |x_k|, whose norm is sqrt(1 - x_k^2) >= sqrt(1 - 1/n) analytically."""
        idx = x.abs().argmin(-1, keepdim=True)
        xk = x.gather(-1, idx)
        t = (-xk * x).scatter_add(-1, idx, torch.ones_like(xk))
        return t * torch.rsqrt(1 - xk * xk)

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        """Closed form: gamma(s) = cos(s|u|) x + sin(s|u|)/|u| u,
        gamma'(s) = cos(s|u|) u - |u|^2 s sinc(s|u|) x (no division by |u|)."""
        s = self._expand_time(s, x)
        theta_sq = last_dim_dot(u, u)
        arg_sq = s * s * theta_sq
        sinc = sinc_sq(arg_sq)
        cos = cos_sq(arg_sq)
        point = cos * x + s * sinc * u
        velocity = cos * u - theta_sq * s * sinc * x
        return point / safe_norm(point, keepdim=True), velocity

    def geodesic_between(self, x: Tensor, y: Tensor, s) -> tuple[Tensor, Tensor]:
        r"""Fused ``geodesic(x, logmap(x, y), s)`` (spherical linear interpolation).

        With :math:`\theta = d(x, y)` and :math:`w` the unit tangent at :math:`x` towards
        :math:`y`: :math:`\gamma(s) = \cos(s\theta) x + \sin(s\theta) w` and
        :math:`\gamma'(s) = \theta(\cos(s\theta) w - \sin(s\theta) x)`, where
        :math:`\sin(\theta) w = y - \langle x, y\rangle x` is formed from :math:`y - x` (no
        cancellation for close points) and :math:`\theta = \mathrm{atan2}(\sin\theta, \cos\theta)`.
        Coincident points give the constant path with zero velocity; exactly antipodal pairs
        follow the same fixed direction as ``logmap``.
        """
        s = self._expand_time(s, x)
        d = y - x
        cos_minus_one = last_dim_dot(x, d)
        v = torch.addcmul(d, cos_minus_one, x, value=-1)  # sin(theta) w
        # The clamp keeps sqrt's gradient finite at v = 0 and makes theta / sin(theta) = 1 there
        # (atan2(a, 1) = a for tiny a), the right limit for coincident points.
        sin = torch.sqrt(last_dim_dot(v, v).clamp_min(torch.finfo(x.dtype).tiny))
        theta = torch.atan2(sin, 1 + cos_minus_one)
        antipodal = (sin <= 4 * torch.finfo(x.dtype).eps) & (cos_minus_one < -1)
        if may_contain_true(antipodal):  # exactly antipodal: every direction minimises
            v = torch.where(antipodal, self._fixed_unit_tangent(x), v)
            sin = torch.where(antipodal, torch.ones_like(sin), sin)
        phi = s * theta
        cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
        point = torch.addcmul(cos_phi * x, sin_phi / sin, v)
        velocity = torch.addcmul((theta * cos_phi / sin) * v, theta * sin_phi, x, value=-1)
        # Unit up to rounding, except near antipodes in low precision where the direction of v
        # is only known to ~eps / sin(theta); renormalise so points stay on the sphere.
        return point * torch.rsqrt(last_dim_dot(point, point)), velocity

    def tangent_basis(self, x: Tensor) -> Tensor:
        """Rows 1..d of the Householder reflection mapping e_0 to -sign(x_0) x."""
        self._check_args(x=x)
        n = self.dim + 1
        sign = torch.where(x[..., :1] >= 0, 1.0, -1.0).to(x.dtype)
        w = x.clone()
        w[..., :1] = w[..., :1] + sign
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        h = eye - 2 * w[..., :, None] * w[..., None, :] / (w * w).sum(-1)[..., None, None]
        return h[..., 1:, :]

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self.proju(y, v)

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        g = torch.randn(*batch_shape, self.dim + 1, dtype=dtype, device=device, generator=generator)
        return self.projx(g)

    def log_volume(self) -> float:
        """log |S^d| = log(2 pi^((d+1)/2) / Gamma((d+1)/2))."""
        k = (self.dim + 1) / 2
        return math.log(2) + k * math.log(math.pi) - math.lgamma(k)

    def base_logprob(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        return torch.full(x.shape[:-1], -self.log_volume(), dtype=x.dtype, device=x.device)

    def worst_violation(self, x: Tensor) -> Tensor:
        # squared norms by a matrix-vector product, then one full-tensor min/max (NaN and inf
        # propagate to a NaN/inf violation)
        if x.numel() == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        low, high = torch.aminmax(last_dim_dot(x, x))
        return torch.maximum(high - 1, 1 - low)

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        return (last_dim_dot(x, x)[..., 0] - 1).abs()

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        return (x * u).sum(-1).abs()
