"""Common base of the rdfm manifolds: a geoopt.Manifold with a fixed point shape,
intrinsic dimension, base distribution and strict input checking."""

from __future__ import annotations

import math
import numbers
from abc import abstractmethod

import geoopt
import torch
from torch import Tensor

from manifolds._math import point_tolerance, safe_sqrt

__all__ = ["RiemannianManifold"]


class RiemannianManifold(geoopt.Manifold):
    """A complete Riemannian manifold whose points are tensors of shape ``(*batch, *point_shape)``.

    Subclasses define the geometry (``expmap``, ``logmap``, ``dist``, ``inner``, ``projx``,
    ``proju``) and a base distribution (``random_base``, ``base_logprob``); ``base_logprob``
    is a log density with respect to the Riemannian volume measure of the manifold's metric.
    Tangent vectors are stored in the same shape as points (ambient representation).
    """

    reversible = True
    #: trailing shape of a point
    point_shape: tuple[int, ...] = ()
    #: intrinsic dimension
    dim: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.ndim = len(self.point_shape)

    # ------------------------------------------------------------------ geometry
    @abstractmethod
    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """Riemannian exponential map: the geodesic from ``x`` with initial velocity ``u`` at time 1."""

    @abstractmethod
    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """Riemannian logarithm: the tangent vector at ``x`` of the minimising geodesic to ``y``."""

    @abstractmethod
    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Geodesic distance."""

    @abstractmethod
    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        """Metric ``g_x(u, v)`` (``v`` defaults to ``u``)."""

    def norm(self, x: Tensor, u: Tensor, *, keepdim: bool = False) -> Tensor:
        """Metric norm of ``u`` at ``x`` (zero gradient at the zero vector)."""
        return safe_sqrt(self.inner(x, u, keepdim=keepdim))

    def dist2(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        return self.dist(x, y, keepdim=keepdim) ** 2

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        return self.expmap(x, u)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Vector transport by projection onto the tangent space at ``y``."""
        return self.proju(y, v)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        """Riemannian gradient from a Euclidean (ambient) gradient; assumes the metric is the
        ambient one unless overridden."""
        return self.proju(x, u)

    def component_inner(self, x: Tensor, u: Tensor, v: Tensor | None = None) -> Tensor:
        """``inner`` with the point dims kept as size-1 dims (what geoopt's optimisers expect)."""
        value = self.inner(x, u, v)
        return value.reshape(value.shape + (1,) * self.ndim)

    def geodesic(self, x: Tensor, u: Tensor, s: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Point and velocity of the geodesic :math:`\gamma(s) = \exp_x(s u)` at ``s``.

        ``s`` has the batch shape (or broadcasts to it). Subclasses override this with closed
        forms; this default differentiates ``expmap`` in ``s`` with a forward-mode JVP.
        """
        s = self._expand_time(s, x)
        out = torch.func.jvp(lambda s_: self.expmap(x, s_ * u), (s,), (torch.ones_like(s),))
        return out[0], out[1]  # (primal, tangent): no auxiliary output

    def geodesic_between(self, x: Tensor, y: Tensor, s: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Point and velocity at ``s`` of the minimising geodesic from ``x`` (at s = 0) to ``y``
        (at s = 1): :math:`\gamma(s) = \exp_x(s \log_x y)` and :math:`\gamma'(s)`.

        The same as ``geodesic(x, logmap(x, y), s)``, which is this default; manifolds override
        it where fusing the two saves work (it is the hot path of geodesic flow matching).
        """
        return self.geodesic(x, self.logmap(x, y), s)

    def tangent_basis(self, x: Tensor) -> Tensor:
        """An orthonormal basis (w.r.t. ``inner``) of the tangent space at each ``x``:
        shape ``(*batch, dim, *point_shape)``.

        Optional for a new manifold: only the divergence of exact likelihoods
        (``ODESolver.log_likelihood``, both estimators) needs it; training and sampling do not."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define tangent_basis, which log-likelihoods need "
            "(the divergence is taken in an orthonormal tangent basis); implement it to use "
            "ODESolver.log_likelihood on this manifold"
        )

    def _expand_time(self, s: Tensor | float, x: Tensor, name: str = "s") -> Tensor:
        """Per-sample times ``s`` aligned with the points ``x``: a float, a 0-dim tensor, or a
        floating-point tensor whose shape is a PREFIX of the batch shape (one time per sample,
        shared by its trailing batch dims; size-1 dims broadcast), returned with trailing
        singleton dims up to ``x.dim()`` so it broadcasts against points. A ``ValueError`` naming
        ``name`` otherwise (metadata checks only, no host read-back)."""
        if isinstance(s, Tensor):
            if not torch.is_floating_point(s):
                raise ValueError(f"{name} must be a floating-point tensor, got dtype {s.dtype}")
            s = s.to(dtype=x.dtype, device=x.device)
        elif isinstance(s, (int, float)) and not isinstance(s, bool):
            s = torch.tensor(float(s), dtype=x.dtype, device=x.device)
        else:
            raise ValueError(f"{name} must be a float or a floating-point tensor, got {type(s).__name__}")
        batch = tuple(x.shape[: x.dim() - self.ndim])
        if s.dim() > len(batch) or any(a != 1 and a != b for a, b in zip(s.shape, batch)):
            raise ValueError(
                f"{name} of shape {tuple(s.shape)} must be a prefix of the batch shape {batch} (one time per sample)"
            )
        return s.reshape(s.shape + (1,) * (x.dim() - s.dim()))

    def _check_args(self, *, shape: bool = True, **tensors: Tensor) -> None:
        """What the public methods combine, checked without a host read-back: tensors, of a
        floating dtype, with the trailing ``point_shape`` (unless ``shape=False``, for elementwise
        maps that broadcast coordinates), all of one dtype (e.g. ``self._check_args(x=x, u=u)``);
        a ``ValueError`` naming the argument otherwise."""
        first = None
        for name, x in tensors.items():
            if not isinstance(x, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if not torch.is_floating_point(x):
                raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
            if shape:
                ok, reason = self._check_shape(x.shape, name)
                if not ok:
                    raise ValueError(reason)
            if first is None:
                first = (name, x)
            elif x.dtype != first[1].dtype:
                raise ValueError(
                    f"{name} has dtype {x.dtype} but {first[0]} has {first[1].dtype}; cast one of them, "
                    f"e.g. {name}.to({first[0]}.dtype)"
                )

    def _base_args(
        self, batch_shape: tuple, dtype: torch.dtype | None, generator: object
    ) -> tuple[tuple[int, ...], torch.dtype]:
        """``random_base``'s arguments checked: the batch shape (ints >= 0, or one tuple of them),
        a floating dtype (default: torch's) and the generator; a ``ValueError`` otherwise."""
        if len(batch_shape) == 1 and isinstance(batch_shape[0], (tuple, list, torch.Size)):
            batch_shape = tuple(batch_shape[0])
        for n in batch_shape:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"batch_shape must be nonnegative integers, got {tuple(batch_shape)}")
        dtype = self._dtype(dtype)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return tuple(int(n) for n in batch_shape), dtype

    # ------------------------------------------------------------------ what networks need
    #: names of the keyword options :meth:`embed` takes (e.g. ``("harmonics",)`` on the torus)
    embedding_options: tuple[str, ...] = ()

    def embedding_size(self, **options) -> int:
        """Number of features :meth:`embed` returns per point with these ``options``."""
        self._check_embedding_options(options)
        return math.prod(self.point_shape)

    def embed(self, x: Tensor, **options) -> Tensor:
        """Features of points for a network's input, shape ``(*batch, embedding_size)``.

        A continuous map of the manifold into R^n that separates points (a network of these
        features is a continuous function on the manifold, seams included). The default is
        the flattened ambient coordinates, right for manifolds embedded in R^n (spheres,
        Euclidean spaces, matrix groups); manifolds whose coordinates are not continuous
        (angles on the torus) override it. ``options`` tune it where a manifold declares them
        in :attr:`embedding_options`; others raise ``ValueError``.
        """
        self._check_embedding_options(options)
        return x.reshape(*x.shape[: x.dim() - self.ndim], -1)

    @property
    def raw_tangent_size(self) -> int:
        """Number of raw network outputs that :meth:`raw_to_tangent` turns into a tangent
        vector. The default is the ambient size (one output per coordinate)."""
        return math.prod(self.point_shape)

    def raw_to_tangent(self, x: Tensor, raw: Tensor) -> Tensor:
        """Tangent vectors at ``x`` from raw network outputs ``(*batch, raw_tangent_size)``.

        The default reads ``raw`` as an ambient vector and projects it onto the tangent space
        (``proju``); manifolds with a cheaper exact parametrisation (Lie-algebra coordinates
        on SO(3) and SE(3)) override it.
        """
        if raw.shape[-1] != self.raw_tangent_size:
            raise ValueError(
                f"raw must have trailing size {self.raw_tangent_size} for {self!r}, got shape {tuple(raw.shape)}"
            )
        return self.proju(x, raw.reshape(*raw.shape[:-1], *self.point_shape))

    def _check_embedding_options(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.embedding_options))
        if unknown:
            takes = ", ".join(self.embedding_options) if self.embedding_options else "none"
            raise ValueError(f"unknown embedding option(s) {', '.join(unknown)} for {self!r} (it takes: {takes})")

    # ------------------------------------------------------------------ distributions
    @abstractmethod
    def random_base(
        self,
        *batch_shape: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw from the base distribution, shape ``(*batch_shape, *point_shape)``."""

    @abstractmethod
    def base_logprob(self, x: Tensor) -> Tensor:
        """Log density of the base distribution w.r.t. the Riemannian volume, shape ``batch``."""

    def random(self, *size, dtype=None, device=None, **kwargs) -> Tensor:
        """geoopt's sampling hook: ``size`` is the full shape including ``point_shape``."""
        if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)):
            size = tuple(size[0])
        batch = size[: len(size) - self.ndim]
        if tuple(size[len(size) - self.ndim :]) != self.point_shape:
            raise ValueError(f"size must end with point_shape {self.point_shape}, got {tuple(size)}")
        return self.random_base(*batch, dtype=dtype, device=device, generator=kwargs.get("generator"))

    # ------------------------------------------------------------------ checks
    def batch_shape(self, x: Tensor) -> torch.Size:
        return x.shape[: x.dim() - self.ndim]

    def _check_shape(self, shape, name):
        shape = tuple(shape)
        if len(shape) < self.ndim or shape[len(shape) - self.ndim :] != self.point_shape:
            return False, f"{name} must have trailing shape {self.point_shape} for {self!r}, got shape {shape}"
        return True, None

    @abstractmethod
    def _distance_from_manifold(self, x: Tensor) -> Tensor:
        """A nonnegative per-point violation measure (0 on the manifold), shape ``batch``."""

    @abstractmethod
    def _distance_from_tangent(self, x: Tensor, u: Tensor) -> Tensor:
        """A nonnegative per-vector violation of the tangency condition, shape ``batch``."""

    def _check_point_on_manifold(self, x, *, atol=None, rtol=None):
        tol = point_tolerance(x.dtype) if atol is None else atol
        err = self._distance_from_manifold(x)
        if err.numel() and float(err.detach().max()) > tol:
            return False, self._off_manifold_message(float(err.detach().max()), tol, x.dtype)
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol=None, rtol=None):
        tol = point_tolerance(u.dtype) if atol is None else atol
        err = self._distance_from_tangent(x, u)
        if err.numel() and float(err.detach().max()) > tol:
            return False, (
                f"vector is not tangent by {float(err.detach().max()):.3g} (tolerance {tol:.3g}); "
                "project it with `manifold.proju(x, u)`"
            )
        return True, None

    def _off_manifold_message(self, err: float, tol: float, dtype: torch.dtype, name: str = "x") -> str:
        message = (
            f"point is off {self!r} by {err:.3g} (tolerance {tol:.3g} for {str(dtype).replace('torch.', '')}); "
            f"project it with `manifold.projx({name})`"
        )
        if dtype == torch.float64 and err <= point_tolerance(torch.float32):
            message += (
                " (an error of float32 rounding: data stored in float32 and cast to float64? project after the cast)"
            )
        return message

    def point_violation(self, x: Tensor) -> Tensor:
        """Per-point distance from the manifold (0 on it, ``inf`` for non-finite points), shape
        ``batch``; what :meth:`check_point` compares with its tolerance, for fused checks."""
        point_dims = tuple(range(x.dim() - self.ndim, x.dim()))
        finite = torch.isfinite(x).all(dim=point_dims) if point_dims else torch.isfinite(x)
        err = self._distance_from_manifold(torch.where(torch.isfinite(x), x, torch.zeros_like(x)))
        return torch.where(finite, err, torch.full_like(err, float("inf")))

    def worst_violation(self, x: Tensor) -> Tensor:
        """0-dim: the largest :meth:`point_violation` of the batch (0 when empty), computed with
        full-tensor reductions only: the cheap form for checks inside training loops."""
        if x.numel() == 0:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        err = self._distance_from_manifold(x)
        worst = err.amax() if err.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(torch.isfinite(x).all(), worst, torch.full_like(worst, float("inf")))

    def check_point(self, x: Tensor, name: str = "x", *, atol: float | None = None) -> None:
        """Validate ``x`` as a batch of points, raising ``ValueError`` naming ``name``.

        Checks the trailing shape, finiteness, and that every point lies on the manifold
        within a dtype-aware tolerance (~1000 ulps; pass ``atol`` to override). The message of
        a point off the manifold says how far off it is and how to fix it (``projx``).
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        ok, reason = self._check_shape(x.shape, name)
        if not ok:
            raise ValueError(reason)
        if not torch.is_floating_point(x):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
        tol = point_tolerance(x.dtype) if atol is None else atol
        err = self._distance_from_manifold(x)
        if err.numel() and float(err.detach().max()) > tol:
            worst = float(err.detach().max())
            count = int((err > tol).sum())
            raise ValueError(
                f"{name}: {count} of {err.numel()} points off the manifold; "
                + self._off_manifold_message(worst, tol, x.dtype, name)
            )

    def check_vector(self, x: Tensor, u: Tensor, name: str = "u", *, atol: float | None = None) -> None:
        """Validate ``u`` as tangent vectors at ``x``, raising ``ValueError`` naming ``name``."""
        if not isinstance(u, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(u).__name__}")
        ok, reason = self._check_shape(u.shape, name)
        if not ok:
            raise ValueError(reason)
        if not torch.is_floating_point(u):
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {u.dtype}")
        self._check_args(x=x)
        if not bool(torch.isfinite(u).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        ok, reason = self._check_vector_on_tangent(x, u, atol=atol)
        if not ok:
            raise ValueError(f"{name}: {reason}")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # helpers for subclasses
    @staticmethod
    def _dtype(dtype: torch.dtype | None) -> torch.dtype:
        return dtype if dtype is not None else torch.get_default_dtype()

    @staticmethod
    def _gaussian_logprob(x: Tensor, dims: tuple[int, ...]) -> Tensor:
        n = math.prod(x.shape[d] for d in dims)
        return -0.5 * (x * x).sum(dim=dims) - 0.5 * n * math.log(2 * math.pi)
