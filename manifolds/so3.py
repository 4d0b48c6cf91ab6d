"""The rotation group SO(3) with its bi-invariant metric."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manifolds._math import one_minus_cos_over_sq, safe_norm, sinc_sq, theta_over_sin
from manifolds.base import RiemannianManifold

__all__ = ["SO3", "hat", "vee", "so3_exp", "so3_log", "rotation_angle", "quaternion_to_matrix"]


def hat(w: Tensor) -> Tensor:
    """Skew-symmetric matrix of ``w`` (``(..., 3) -> (..., 3, 3)``), ``hat(w) @ v = w x v``."""
    if w.shape[-1] != 3:
        raise ValueError(f"w must have trailing dim 3, got shape {tuple(w.shape)}")
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*w.shape[:-1], 3, 3)


def vee(m: Tensor) -> Tensor:
    """Inverse of :func:`hat` applied to the skew part of ``m`` (``(..., 3, 3) -> (..., 3)``)."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], dim=-1
    )


def so3_exp(w: Tensor) -> Tensor:
    """Rodrigues' formula ``exp(hat(w))`` with Taylor branches at small angles."""
    theta_sq = (w * w).sum(-1)[..., None, None]
    k = hat(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    return eye + sinc_sq(theta_sq) * k + one_minus_cos_over_sq(theta_sq) * (k @ k)


def _angle_parts(q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(s, cos, theta) of a rotation: s = sin(theta) * axis from the skew part,
    theta = atan2(|s|, cos) in [0, pi]."""
    s = vee(q)
    cos = 0.5 * (q[..., 0, 0] + q[..., 1, 1] + q[..., 2, 2] - 1)
    theta = torch.atan2(safe_norm(s), cos)
    return s, cos, theta


def rotation_angle(q: Tensor) -> Tensor:
    """Rotation angle in [0, pi] of rotation matrices ``(..., 3, 3)`` (atan2 formula)."""
    return _angle_parts(q)[2]


def so3_log(q: Tensor) -> Tensor:
    """Rotation vector ``w`` with ``exp(hat(w)) = q`` and ``|w| <= pi``.

    Two branches, each used where it is well conditioned: for angles below pi/2 the skew part
    gives ``w = theta / sin(theta) * vee(q)``; above pi/2 the axis is read from the symmetric
    part ``(q + q^T)/2 - cos I = (1 - cos) a a^T`` (its largest column), with the sign of
    ``vee(q)``. At exactly pi the sign is arbitrary (both are valid logarithms).
    """
    s, cos, theta = _angle_parts(q)
    small = cos > 0  # theta < pi/2
    w_small = theta_over_sin(torch.where(small, theta, torch.zeros_like(theta)))[..., None] * s

    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    b = 0.5 * (q + q.transpose(-1, -2)) - cos[..., None, None] * eye
    col = torch.diagonal(b, dim1=-2, dim2=-1).argmax(-1)
    axis = torch.gather(b, -1, col[..., None, None].expand(*b.shape[:-1], 1)).squeeze(-1)
    axis = axis / safe_norm(axis, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
    sign = torch.where((axis * s).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(q.dtype)
    w_large = theta[..., None] * sign * axis
    return torch.where(small[..., None], w_small, w_large)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices of (not necessarily unit) quaternions ``(..., 4)`` in (w, x, y, z) order."""
    q = q / safe_norm(q, keepdim=True)
    w, x, y, z = q.unbind(-1)
    m = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - z * w),
            2 * (x * z + y * w),
            2 * (x * y + z * w),
            1 - 2 * (x * x + z * z),
            2 * (y * z - x * w),
            2 * (x * z - y * w),
            2 * (y * z + x * w),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


class _PolarProjection(torch.autograd.Function):
    """Nearest rotation ``R`` to ``M`` (``M = R S``, ``S`` symmetric) with derivatives that stay
    finite when singular values repeat (e.g. when ``M`` is already a rotation).

    With ``S = V diag(sigma) V^T``: ``dR = R Omega`` where ``S Omega + Omega S = R^T dM - dM^T R``
    (forward mode), and ``dL/dM = 2 R Y`` with ``S Y + Y S = skew(R^T G)`` (reverse mode); both
    Sylvester equations are solved elementwise in the eigenbasis of ``S`` since
    ``sigma_i + sigma_j > 0`` away from singular ``M``. Supports autograd and torch.func.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(m: Tensor) -> Tensor:
        u, _, vh = torch.linalg.svd(m)
        det = torch.linalg.det(u @ vh)
        last = torch.where(det < 0, -1.0, 1.0).to(m.dtype)[..., None]
        flip = torch.cat([torch.ones_like(u[..., 0, :2]), last], dim=-1)
        return (u * flip[..., None, :]) @ vh

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)
        ctx.save_for_forward(inputs[0], output)

    @staticmethod
    def _solve_sylvester(m: Tensor, r: Tensor, c: Tensor) -> Tensor:
        """Y with S Y + Y S = c, for S = R^T M (symmetric, positive for proper inputs)."""
        s = r.transpose(-1, -2) @ m
        sigma, v = torch.linalg.eigh(0.5 * (s + s.transpose(-1, -2)))
        denom = sigma[..., :, None] + sigma[..., None, :]
        tiny = torch.finfo(denom.dtype).tiny
        denom = torch.where(denom.abs() > tiny, denom, torch.full_like(denom, tiny))
        vt = v.transpose(-1, -2)
        return v @ ((vt @ c @ v) / denom) @ vt

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        m, r = ctx.saved_tensors
        a = r.transpose(-1, -2) @ grad
        y = _PolarProjection._solve_sylvester(m, r, 0.5 * (a - a.transpose(-1, -2)))
        return 2 * r @ y

    @staticmethod
    def jvp(ctx, dm: Tensor) -> Tensor:
        m, r = ctx.saved_tensors
        a = r.transpose(-1, -2) @ dm
        return r @ _PolarProjection._solve_sylvester(m, r, a - a.transpose(-1, -2))


class _CompiledPolarProjection(torch.autograd.Function):
    """:class:`_PolarProjection` with its reverse mode only, for ``torch.compile``: Dynamo
    traces custom backward formulas but not custom forward-mode (``jvp``) ones, so a graph with
    the full class breaks there. Forward-mode derivatives (exact divergences) stay eager."""

    forward = staticmethod(_PolarProjection.forward)
    setup_context = staticmethod(_PolarProjection.setup_context)
    backward = staticmethod(_PolarProjection.backward)


def _same_dtype(x: Tensor, u: Tensor, name: str = "u") -> None:
    """Matrix products of mixed float dtypes are a raw torch error: name both dtypes instead
    (except under autocast, which casts them)."""
    if (
        isinstance(u, Tensor)
        and isinstance(x, Tensor)
        and u.dtype != x.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise ValueError(f"{name} has dtype {u.dtype} but x has {x.dtype}; cast one of them, e.g. {name}.to(x.dtype)")


def _rotation_representation(rotation: str) -> str:
    if rotation not in ("matrix", "6d"):
        raise ValueError(f"rotation representation must be 'matrix' or '6d', got {rotation!r}")
    return rotation


class SO3(RiemannianManifold):
    r"""The rotation group :math:`SO(3)`.

    Conventions:
        points: rotation matrices ``(..., 3, 3)``;
        tangent vectors at ``R``: matrices ``R @ hat(w)`` (``(..., 3, 3)``), i.e. the
        left-trivialised Lie algebra element ``w`` carried in ambient form;
        metric: :math:`\langle A, B\rangle_R = \tfrac12 \mathrm{tr}(A^\top B)`, bi-invariant,
        so :math:`|R\,\hat w| = |w|` and ``dist(R, R @ exp(hat(w))) = |w|`` for ``|w| <= pi``
        (``dist`` is the rotation angle of :math:`R_1^\top R_2`);
        base distribution: Haar (uniform), density :math:`1/(8\pi^2)` w.r.t. this metric's volume.
    """

    point_shape = (3, 3)
    dim = 3

    def extra_repr(self) -> str:
        return ""

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        v = u if v is None else v
        out = 0.5 * (u * v).sum(dim=(-2, -1))
        if keepdim:
            out = out[..., None, None]
        return out.expand(torch.broadcast_shapes(out.shape, x.shape[:-2] + ((1, 1) if keepdim else ())))

    def projx(self, x: Tensor) -> Tensor:
        """Nearest rotation in Frobenius norm (polar factor with determinant +1)."""
        self._check_args(x=x)
        if torch.compiler.is_compiling():
            return _CompiledPolarProjection.apply(x)
        return _PolarProjection.apply(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        _same_dtype(x, u)
        a = x.transpose(-1, -2) @ u
        return x @ (0.5 * (a - a.transpose(-1, -2)))

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        # The metric is half the Frobenius one, so the Riemannian gradient is twice the projection.
        return 2 * self.proju(x, u)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Left-invariant transport: ``x @ hat(w)`` goes to ``y @ hat(w)``."""
        _same_dtype(x, v, "v")
        _same_dtype(x, y, "y")
        return y @ (x.transpose(-1, -2) @ v)

    embedding_options = ("rotation",)

    def embedding_size(self, *, rotation: str = "matrix") -> int:  # type: ignore[override]  # this manifold's own named options (base: **options)
        return 9 if _rotation_representation(rotation) == "matrix" else 6

    def embed(self, x: Tensor, *, rotation: str = "matrix") -> Tensor:  # type: ignore[override]  # this manifold's own named options (base: **options)
        """Rotation features: the 9 matrix entries (``rotation="matrix"``) or the continuous
        6-D representation of its first two columns (``"6d"``, Zhou et al. 2019)."""
        if _rotation_representation(rotation) == "6d":
            x = x[..., :, :2]
        return x.flatten(-2)

    @property
    def raw_tangent_size(self) -> int:
        return 3

    def raw_to_tangent(self, x: Tensor, raw: Tensor) -> Tensor:
        """``x @ hat(w)`` for body angular velocities ``w = raw`` (exactly tangent)."""
        if raw.shape[-1] != 3:
            raise ValueError(f"raw must have trailing size 3 (Lie-algebra coordinates), got shape {tuple(raw.shape)}")
        return x @ hat(raw)

    def to_lie(self, x: Tensor, u: Tensor) -> Tensor:
        """Body angular velocity ``w`` of a tangent vector ``u = x @ hat(w)``."""
        return vee(x.transpose(-1, -2) @ u)

    def from_lie(self, x: Tensor, w: Tensor) -> Tensor:
        """Tangent vector ``x @ hat(w)``."""
        return x @ hat(w)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        self._check_args(x=x, u=u)
        return x @ so3_exp(self.to_lie(x, u))

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        self._check_args(x=x, y=y)
        return x @ hat(so3_log(x.transpose(-1, -2) @ y))

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        self._check_args(x=x, y=y)
        d = rotation_angle(x.transpose(-1, -2) @ y)
        return d[..., None, None] if keepdim else d

    def geodesic(self, x: Tensor, u: Tensor, s) -> tuple[Tensor, Tensor]:
        """Closed form: gamma(s) = x exp(s hat(w)), gamma'(s) = gamma(s) hat(w), w = vee(x^T u)."""
        self._check_args(x=x, u=u)
        w = self.to_lie(x, u)
        s = self._expand_time(s, x)[..., 0]  # per-sample times (a prefix of the batch shape), (..., 1)
        point = x @ so3_exp(s * w)
        return point, point @ hat(w).expand_as(point)

    def tangent_basis(self, x: Tensor) -> Tensor:
        """x @ hat(e_i), i = 1..3: orthonormal under 1/2 tr(A^T B)."""
        self._check_args(x=x)
        generators = hat(torch.eye(3, dtype=x.dtype, device=x.device))
        return x[..., None, :, :] @ generators

    def random_base(self, *batch_shape, dtype=None, device=None, generator=None) -> Tensor:
        # A normalised standard normal quaternion is uniform on S^3, whose image is Haar on SO(3).
        batch_shape, dtype = self._base_args(batch_shape, dtype, generator)
        q = torch.randn(*batch_shape, 4, dtype=dtype, device=device, generator=generator)
        return quaternion_to_matrix(q)

    def base_logprob(self, x: Tensor) -> Tensor:
        self._check_args(x=x)
        return torch.full(x.shape[:-2], -math.log(8 * math.pi**2), dtype=x.dtype, device=x.device)

    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        ortho = (x.transpose(-1, -2) @ x - eye).abs().amax(dim=(-2, -1))
        return torch.maximum(ortho, (torch.linalg.det(x) - 1).abs())

    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        a = x.transpose(-1, -2) @ u
        return (a + a.transpose(-1, -2)).abs().amax(dim=(-2, -1))
