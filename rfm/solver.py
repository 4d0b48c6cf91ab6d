r"""ODE sampling and exact likelihoods for flows on manifolds.

The learned flow :math:`\dot x_t = v_\theta(x_t, t)` is integrated with explicit Runge-Kutta
methods whose stage points stay on the manifold (projected ambient steps by default, or
exponential-map steps). Log-likelihoods follow the instantaneous change of variables on a
Riemannian manifold,

.. math::
    \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \operatorname{div}_g v_\theta(x_t, t)\, dt,

integrated backwards from :math:`x_1`. The Riemannian divergence is
:math:`\sum_i g(e_i, \nabla_{e_i} v)` over a :math:`g`-orthonormal tangent basis
:math:`(e_i)`; on embedded manifolds (with a metric proportional to the ambient one)
:math:`\nabla_{e} v = P_x(Dv[e])`, so the divergence is the trace of the tangent-projected
ambient Jacobian, computed with one batched forward-mode JVP over all basis vectors
(``"exact"``) or over random tangent probes (``"hutchinson"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from gm.checks import (
    broadcast_time,
    check_callable,
    check_floating,
    check_generator,
    check_positive_int,
    check_same_dtype,
    describe_time_range,
    time_out_of_range,
)
from gm.process import Process
from gm.simulate import compiled_advance, make_time_grid, simulate
from manifolds.base import RiemannianManifold
from manifolds.euclidean import Euclidean
from rfm.path import checked_points

__all__ = ["ODESolver", "ManifoldFlowProcess", "riemannian_divergence"]

Velocity = Callable[[Tensor, Tensor], Tensor]

# Butcher tableaus (a, b, c) of the explicit methods.
_TABLEAUS: dict[str, tuple[list[list[float]], list[float], list[float]]] = {
    "euler": ([[]], [1.0], [0.0]),
    "midpoint": ([[], [0.5]], [0.0, 1.0], [0.0, 0.5]),
    "rk4": ([[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], [1 / 6, 1 / 3, 1 / 3, 1 / 6], [0.0, 0.5, 0.5, 1.0]),
}
_STEPPINGS = ("project", "exp")
_DEFAULT_STEPS = 100


def _check_method(method: str, stepping: str) -> None:
    if method not in _TABLEAUS:
        raise ValueError(f"method must be one of {sorted(_TABLEAUS)}, got {method!r}")
    if stepping not in _STEPPINGS:
        raise ValueError(f"stepping must be one of {_STEPPINGS}, got {stepping!r}")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _check_points(m: RiemannianManifold, x: Tensor, name: str, *, validate: bool, data: bool = False) -> Tensor:
    """Type, shape and dtype of points (no host read-back); with ``validate`` also their values
    (finite, on the manifold; ``data`` within float32 rounding, then projected: see
    :func:`rfm.path.checked_points`) with one read-back."""
    m._check_args(shape=True, **{name: x})
    return checked_points(m, [(name, x, data)])[0] if validate else x


# A RuntimeError of a model fed points of another dtype than its parameters ("mat1 and mat2 must
# have the same dtype", "expected scalar type Double but found Float", "Input type (double) and
# bias type (float) should be the same", ...).
_DTYPE_CLASH = re.compile(r"dtype|scalar type|\btype \(\w+\) and \w+ type")


def _parameter_dtype(model: Any) -> torch.dtype | None:
    """The floating dtype of ``model``'s parameters: an ``nn.Module``, or a bound method of one
    (``model.forward``); ``None`` for other callables (closures, functions)."""
    module = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
    if isinstance(module, nn.Module):
        for p in module.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


def _guarded(velocity: Velocity, name: str) -> Velocity:
    """``velocity`` with a dtype clash between the points and the model turned into a
    ``ValueError`` naming both dtypes (no cost unless the model raises)."""

    def call(x, t):
        try:
            return velocity(x, t)
        except RuntimeError as error:
            # only a clash between the points and the model's dtype is ours to explain
            if not _DTYPE_CLASH.search(str(error)):
                raise
            params = _parameter_dtype(velocity)
            if params == x.dtype:
                raise
            if params is None:  # a closure or function: its network's dtype is not visible from here
                raise ValueError(
                    f"velocity(x, t) failed on points of dtype {x.dtype} ({name}'s dtype) with a dtype error "
                    f"({error}); the points and the model the velocity calls must share a dtype: cast the points "
                    f"({name}.to(...)) or the model (model.to({x.dtype}))"
                ) from error
            raise ValueError(
                f"velocity(x, t) failed on points of dtype {x.dtype} ({name}'s dtype)"
                + f" with a model whose parameters are {params} ({error}); the points and the model must "
                f"share a dtype: cast the points ({name}.to({params})) or the model (model.to({x.dtype}))"
            ) from error

    return call


def _check_finite_flow(out: Tensor, times: Tensor, stacked: bool, batch_dims: int) -> None:
    """A ``ValueError`` if the solve produced non-finite points (one host read-back)."""
    if bool(torch.isfinite(out).all()):
        return
    final = out[-1] if stacked else out
    per_sample = ~torch.isfinite(final.reshape(*final.shape[:batch_dims], -1)).all(-1)
    message = (
        f"the flow produced non-finite points: {int(per_sample.sum())} of {per_sample.numel()} samples are "
        f"NaN/inf at t={float(times[-1]):.6g}"
    )
    if stacked:
        finite_at = torch.isfinite(out.reshape(out.shape[0], -1)).all(-1)
        first = int((~finite_at).nonzero()[0, 0])
        message += f" (first at t={float(times[first]):.6g})"
    raise ValueError(
        message + "; the velocity returned NaN/inf or the solve diverged: check the model, or take smaller steps"
    )


def _weighted_sum(terms: list[Tensor], weights: list[float]) -> Tensor:
    """sum_i w_i t_i, skipping zero weights, one kernel per term."""
    total = None
    for w, term in zip(weights, terms):
        if w == 0.0:
            continue
        if total is None:
            total = term if w == 1.0 else w * term
        else:
            total = torch.add(total, term, alpha=w)
    assert total is not None  # every row and weight vector of _TABLEAUS has a nonzero weight
    return total


class ManifoldFlowProcess(Process):
    """A flow on a manifold integrated by an explicit Runge-Kutta method.

    ``stepping="project"`` takes the Runge-Kutta combination in the ambient space and
    projects (``projx``) every stage point: classical RK applied to the projected field,
    which keeps the method's order. ``stepping="exp"`` moves along geodesics
    (``expmap`` of the increment, with each stage velocity carried back to the step's base
    point by the manifold's vector transport); exact for left-invariant fields on SO(3), but
    without the dexp correction of Runge-Kutta-Munthe-Kaas its order can drop below the
    method's on curved spaces — prefer ``"project"`` for high accuracy.

    The state may be a tensor of points or a tuple ``(points, extra)`` where ``extra`` is
    integrated alongside (used for log-densities): the field then returns a pair.
    """

    def __init__(self, manifold: RiemannianManifold, method: str = "euler", stepping: str = "project") -> None:
        if not isinstance(manifold, RiemannianManifold):
            raise ValueError(f"manifold must be an rdfm manifold, got {type(manifold).__name__}")
        _check_method(method, stepping)
        self.manifold = manifold
        self.method = method
        self.stepping = stepping
        self.a, self.b, self.c = _TABLEAUS[method]
        self.stages = len(self.b)

    @staticmethod
    def _unpack(out: Any, points: Tensor, extra: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The model's velocity (and rate, for a ``(points, extra)`` state), checked: a
        floating-point tensor of the points' shape (metadata only, no host read-back), cast to the
        points' dtype (e.g. from bfloat16 under autocast) so the state keeps its dtype."""
        rate = None
        if extra is not None:
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise ValueError(
                    "with a (points, extra) state the model must return a pair (velocity, rate), got " + _describe(out)
                )
            out, rate = out
            if not isinstance(rate, Tensor) or not torch.is_floating_point(rate) or rate.shape != extra.shape:
                raise ValueError(
                    f"the model's rate must be a floating-point tensor of the extra state's shape "
                    f"{tuple(extra.shape)}, got {_describe(rate)}"
                )
            if rate.dtype != extra.dtype:
                rate = rate.to(extra.dtype)
        if not isinstance(out, Tensor) or not torch.is_floating_point(out):
            raise ValueError(f"the velocity must be a floating-point tensor, got {_describe(out)}")
        if out.shape != points.shape:
            raise ValueError(
                f"the velocity has shape {tuple(out.shape)} but the points have shape "
                f"{tuple(points.shape)}: return one tangent vector per point"
            )
        if out.dtype != points.dtype:
            out = out.to(points.dtype)
        return out, rate

    def _retract(self, x: Tensor, h: Tensor, v: Tensor) -> Tensor:
        """The point reached from ``x`` by the increment ``h * v``."""
        m = self.manifold
        if self.stepping == "project":
            return m.projx(torch.addcmul(x, h, v))
        return m.expmap(x, m.proju(x, h * v))

    def step(self, x, t, h, model_output):
        """Euler update given the velocity (and optional extra rate) at ``(x, t)``."""
        if isinstance(x, tuple):
            points, extra = x
            v, rate = self._unpack(model_output, points, extra)
            return self._retract(points, h, v), torch.addcmul(extra, h, rate)
        v, _ = self._unpack(model_output, x, None)
        return self._retract(x, h, v)

    def _combine(self, points: Tensor, stages: list[Tensor], ks: list[Tensor], weights: list[float]) -> Tensor:
        """sum_i w_i k_i as a velocity at ``points``: ambient for projected stepping; each
        stage velocity transported back to ``points`` (``manifold.transp``) for exp stepping."""
        if self.stepping == "exp":
            ks = [k if y is points else self.manifold.transp(y, points, k) for y, k in zip(stages, ks)]
        return _weighted_sum(ks, weights)

    def advance(self, x, t, h, model):
        if self.method == "euler":
            return self.step(x, t, h, model(x, t))
        augmented = isinstance(x, tuple)
        points, extra = x if augmented else (x, None)
        stages, ks, rates = [], [], []
        for a_row, c in zip(self.a, self.c):
            stage = self._retract(points, h, self._combine(points, stages, ks, a_row)) if ks else points
            out = model((stage, extra) if augmented else stage, t if c == 0.0 else torch.add(t, h, alpha=c))
            v, rate = self._unpack(out, stage, extra)
            stages.append(stage)
            ks.append(v)
            rates.append(rate)
        new_points = self._retract(points, h, self._combine(points, stages, ks, self.b))
        if not augmented:
            return new_points
        return new_points, torch.addcmul(extra, h, _weighted_sum(rates, self.b))

    def finalize(self, x, t):
        if isinstance(x, tuple):
            return self.manifold.projx(x[0]), x[1]
        return self.manifold.projx(x)


def riemannian_divergence(
    manifold: RiemannianManifold,
    velocity: Velocity,
    x: Tensor,
    t: Tensor | float,
    probes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Velocity and its Riemannian divergence at ``x`` in one batched forward-mode JVP.

    Args:
        manifold: the manifold.
        velocity: ``velocity(x, t)`` returning tangent vectors; must support torch.func.jvp
            and any number of leading batch dims.
        x: points ``(*batch, *point_shape)`` on the manifold, floating point.
        t: time in [0, 1]: a float, a 0-dim tensor, or per-sample times whose shape is a prefix
            of the batch shape. The ``k`` basis vectors (or probes) are evaluated in one call with
            the replicas folded into the first batch dim: ``velocity`` sees points
            ``(k * batch[0], *batch[1:], *point_shape)`` and times either 0-dim or folded the same
            way, so a plain ``(B, D)`` model works. The fold is replica-major (entry ``j`` is
            sample ``j % batch[0]``): a closure that conditions on per-sample data tiles it,
            ``labels.repeat(len(z) // len(labels))``.
        probes: ``None`` for the exact divergence over an orthonormal tangent basis, or
            intrinsic probe coordinates ``(n_probes, *batch, dim)`` (``x``'s dtype) for Hutchinson's
            estimator ``mean_k g(z_k, J z_k)`` with ``z_k = sum_i probes[k, i] e_i``.

    Returns:
        ``(v, div)`` with ``v`` of the shape of ``x`` and ``div`` of the batch shape.

    Raises:
        ValueError: naming the argument, for a wrong type, shape or dtype (integer points, probes
            of another dtype, a velocity of the wrong shape or a model of another dtype), for
            non-finite points or points off the manifold, and for times that are NaN or outside
            [0, 1] (the value checks cost one host read-back; :meth:`ODESolver.log_likelihood`
            checks once per solve instead of once per evaluation).
    """
    if not isinstance(manifold, RiemannianManifold):
        raise ValueError(f"manifold must be an rdfm manifold, got {type(manifold).__name__}")
    check_callable(velocity, "velocity")
    m = manifold
    _check_points(m, x, "x", validate=False)
    batch = m.batch_shape(x)
    if isinstance(t, Tensor) and t.dim() > 0:
        broadcast_time(t, batch, dtype=x.dtype, device=x.device)  # shape and dtype checks
        t = t.to(dtype=x.dtype, device=x.device)
    else:
        t = broadcast_time(t, (), dtype=x.dtype, device=x.device)
    if probes is not None:
        check_floating(probes, "probes")
        check_same_dtype(x, "x", probes, "probes")
        expected = (*batch, m.dim)
        if probes.dim() != len(expected) + 1 or tuple(probes.shape[1:]) != expected or probes.shape[0] < 1:
            raise ValueError(
                f"probes must have shape (n_probes, *batch, dim) = (n, {', '.join(map(str, expected))}) "
                f"with n >= 1, got {tuple(probes.shape)}"
            )
    checked_points(m, [("x", x, False)], then=[(time_out_of_range(t), lambda: describe_time_range(t))])
    return _divergence(m, _guarded(velocity, "x"), x, t, probes)


def _divergence(
    m: RiemannianManifold, velocity: Velocity, x: Tensor, t: Tensor, probes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:func:`riemannian_divergence` without its argument checks (the solver's inner loop)."""
    basis = m.tangent_basis(x)  # (*batch, dim, *point_shape)
    basis = torch.movedim(basis, -m.ndim - 1, 0)  # (dim, *batch, *point_shape)
    if probes is None:
        tangents = basis
    else:
        coords = probes.reshape(probes.shape + (1,) * m.ndim)  # (n, *batch, dim, 1...)
        tangents = (torch.movedim(coords, -m.ndim - 1, 1) * basis.unsqueeze(0)).sum(1)
    k = tangents.shape[0]
    x_rep = x.unsqueeze(0).expand(k, *x.shape)
    t_rep = t if t.dim() == 0 else t.unsqueeze(0).expand(k, *t.shape)  # per-sample times: a prefix again
    # The k replicas are folded into the first batch dim, so the velocity sees points with the
    # batch rank it was trained on: a plain (B, D) model works (at (k * B, D)).
    folded = x.dim() > m.ndim
    if folded:
        x_rep, tangents_in = x_rep.reshape(-1, *x.shape[1:]), tangents.reshape(-1, *x.shape[1:])
        if t_rep.dim() > 0:
            t_rep = t_rep.reshape(-1, *t.shape[1:])
    else:
        tangents_in = tangents

    def field(z: Tensor) -> Tensor:
        v = velocity(z, t_rep)
        if not isinstance(v, Tensor) or not torch.is_floating_point(v) or v.shape != z.shape:
            raise ValueError(
                f"the velocity must be a floating-point tensor of the points' shape {tuple(z.shape)}, "
                f"got {_describe(v)}"
            )
        return m.proju(z, v if v.dtype == z.dtype else v.to(z.dtype))  # e.g. bfloat16 under autocast

    # without has_aux, jvp returns the pair (output, jvp_out)
    v_rep, jv = cast("tuple[Tensor, Tensor]", torch.func.jvp(field, (x_rep.contiguous(),), (tangents_in.contiguous(),)))
    x_rep, v_rep, jv = (u.reshape(k, *x.shape) for u in (x_rep, v_rep, jv))
    terms = m.inner(x_rep, tangents, jv)
    div = terms.sum(0) if probes is None else terms.mean(0)
    return v_rep[0], div


@dataclass
class ODESolver:
    """Sample and evaluate the likelihood of a flow ``velocity(x, t)`` on ``manifold``.

    Args:
        manifold: the state space.
        velocity: callable ``(x, t) -> tangent vector at x``; ``t`` is a 0-dim tensor.
        path: optional, keyword only: the probability path the model was trained on (an
            :class:`rfm.AffinePath` or :class:`rfm.GeodesicPath`, or any object with
            ``source_log_prob(x0)``). :meth:`log_likelihood` then adds the log-density of that
            path's source at t = 0 (N(0, sigma_max^2 I) for a VE path); without it,
            ``manifold.base_logprob`` (N(0, I) on :class:`manifolds.Euclidean`, right for the
            geodesic paths and the affine paths whose source is N(0, I): CondOT, cosine, VP).

    Inputs are checked as everywhere in rdfm: a ``ValueError`` naming the argument for a wrong
    type, shape or dtype, bad options (``steps``, ``method``, ``stepping``, ``time_grid``,
    ``divergence``, ``n_probes``, ``generator``), and, with ``validate=True`` (the default), for
    non-finite points or points off the manifold. Points and a model of different floating
    dtypes (float64 points, a float32 network) raise a ``ValueError`` naming both; velocities
    the model returns in another floating dtype (e.g. bfloat16 under autocast) are cast to the
    points' dtype. With ``validate=True`` a solve that ends in NaN/inf (a model returning NaN,
    or a diverging solve) raises instead of returning NaN samples or log-likelihoods: one
    host read-back at the start and one at the end of a solve, none per step.
    """

    manifold: RiemannianManifold
    velocity: Velocity
    path: Any = field(default=None, kw_only=True)
    # compiled steps by (method, stepping, compile mode): each compiles once per solver
    _compiled: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.manifold, RiemannianManifold):
            raise ValueError(f"manifold must be an rdfm manifold, got {type(self.manifold).__name__}")
        check_callable(self.velocity, "velocity")
        if self.path is not None and not callable(getattr(self.path, "source_log_prob", None)):
            raise ValueError(
                f"path must be an rfm path with a source density (AffinePath, GeodesicPath: "
                f"source_log_prob(x0)), got {type(self.path).__name__}; pass log_p0=... to "
                "log_likelihood for a path of your own"
            )
        path_manifold = getattr(self.path, "manifold", None)
        if isinstance(path_manifold, RiemannianManifold) and repr(path_manifold) != repr(self.manifold):
            raise ValueError(f"path lives on {path_manifold!r} but the solver's manifold is {self.manifold!r}")
        if self.path is not None and path_manifold is None and not isinstance(self.manifold, Euclidean):
            raise ValueError(f"path {self.path!r} is a Euclidean path, but the solver's manifold is {self.manifold!r}")

    def source_log_prob(self, x0: Tensor) -> Tensor:
        """The default ``log_p0`` of :meth:`log_likelihood`: the path's source density if the
        solver has a ``path``, else ``manifold.base_logprob``."""
        return self.path.source_log_prob(x0) if self.path is not None else self.manifold.base_logprob(x0)

    def _source_density(self, log_p0: Callable[[Tensor], Tensor] | None, x0: Tensor, batch: tuple) -> Tensor:
        """``log_p0(x0)`` (default :meth:`source_log_prob`), checked: a floating-point tensor of the
        batch shape (metadata only), in the points' dtype."""
        value = (self.source_log_prob if log_p0 is None else log_p0)(x0)
        if not isinstance(value, Tensor) or not torch.is_floating_point(value) or tuple(value.shape) != tuple(batch):
            raise ValueError(
                f"log_p0(x0) must return a floating-point tensor of the batch shape {tuple(batch)}, got "
                + _describe(value)
            )
        return value.to(x0.dtype)

    def sample(
        self,
        x0: Tensor,
        time_grid: Sequence[float] | Tensor = (0.0, 1.0),
        steps: int | None = None,
        method: str = "euler",
        stepping: str = "project",
        return_intermediates: bool = False,
        progress: bool = False,
        enable_grad: bool = False,
        *,
        validate: bool = True,
        compile: bool | str = False,
    ) -> Tensor:
        """Integrate the flow from ``x0`` along ``time_grid``.

        Args:
            x0: points at ``time_grid[0]``, ``(*batch, *point_shape)``.
            time_grid: monotone times in [0, 1]; may start anywhere and run backwards.
            steps: with a two-point ``time_grid``, the number of equal steps (default 100);
                with a longer grid, leave ``None`` to step exactly on the grid.
            method: ``"euler"``, ``"midpoint"`` or ``"rk4"``.
            stepping: ``"project"`` (projected ambient steps) or ``"exp"`` (geodesic steps).
            return_intermediates: return the states at every grid time, stacked on dim 0.
            progress: tqdm progress bar.
            enable_grad: keep the autograd graph.
            validate: check that ``x0`` is finite and on the manifold, and that the samples are
                finite (one host read-back each; see the class docstring).
            compile: ``torch.compile`` one step (the model and the manifold update, all Runge-Kutta
                stages: :func:`gm.simulate.compiled_advance`, ``fullgraph=True``): ``True`` or a
                mode (``"reduce-overhead"``: CUDA graphs). Compiled once per solver and
                ``(method, stepping, mode)``, reused by later calls; the first call pays the
                compilation (seconds to minutes), so it pays for long or repeated solves. Off by
                default. A model that breaks the graph raises at the first step.

        Raises:
            ValueError: see the class docstring.
        """
        m = self.manifold
        _check_points(m, x0, "x0", validate=validate)
        process = ManifoldFlowProcess(m, method, stepping)
        grid = make_time_grid(time_grid, steps, default_steps=_DEFAULT_STEPS, dtype=x0.dtype)  # CPU: no sync
        velocity = _guarded(self.velocity, "x0")
        advance = None
        if compile is not False:
            key = (method, stepping, compile)
            if key not in self._compiled:
                self._compiled[key] = compiled_advance(process, velocity, compile)
            advance = self._compiled[key]
        out = simulate(
            process,
            velocity,
            x0,
            grid,
            return_intermediates=return_intermediates,
            progress=progress,
            enable_grad=enable_grad,
            advance=advance,
        )
        if validate:
            _check_finite_flow(out, grid, return_intermediates, len(m.batch_shape(x0)))
        return out

    def log_likelihood(
        self,
        x1: Tensor,
        steps: int | None = 32,
        method: str = "rk4",
        divergence: str = "exact",
        n_probes: int = 1,
        time_grid: Sequence[float] | Tensor = (1.0, 0.0),
        stepping: str = "project",
        generator: torch.Generator | None = None,
        progress: bool = False,
        return_source: bool = False,
        *,
        log_p0: Callable[[Tensor], Tensor] | None = None,
        validate: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Exact (or Hutchinson) log-density :math:`\\log p_1(x_1)` of the flow's endpoint.

        Integrates :math:`(x_t, \\int \\operatorname{div} v)` backwards from ``time_grid[0]``
        (default 1) to ``time_grid[-1]`` (default 0) and adds the source log-density
        ``log_p0(x_0)``: by default the solver's ``path``'s source (``path.source_log_prob``), or
        ``manifold.base_logprob`` without a path. The flow only moves densities: a model
        sampled from another source (a VE path's N(0, sigma_max^2 I), the exact t = 0
        marginal of a path, a prior of your own) needs that source here, or the result is the
        likelihood of a different model.

        Args:
            x1: points ``(*batch, *point_shape)``; data within float32 rounding of the manifold
                (float32 data cast to float64) are accepted and projected onto it.
            steps: number of equal steps (``None`` to use ``time_grid`` as given).
            method: ``"euler"``, ``"midpoint"`` or ``"rk4"``.
            divergence: ``"exact"`` (trace over an orthonormal tangent basis, ``dim`` JVPs
                batched into one call) or ``"hutchinson"`` (``n_probes`` Rademacher probes in
                intrinsic coordinates, drawn once per solve).
            n_probes: number of Hutchinson probes (a positive integer; unused by ``"exact"``).
            time_grid: from 1 (data) down to 0 (base). For sharply concentrated data
                densities pass ``steps=None, time_grid=gm.data_end_time_grid(N, 2,
                backward=True)``: the flow contracts near t = 1 and equal steps are biased there
                (the benchmarks' setting, N = 128).
            stepping: as in :meth:`sample`.
            generator: RNG for the Hutchinson probes (drawn on its device).
            progress: tqdm progress bar.
            return_source: also return the integrated source points ``x_0``.
            log_p0: the source log-density, a callable ``x_0 -> (*batch,)`` (default: see above),
                evaluated at the points the backward solve reaches at ``time_grid[-1]``.
            validate: check that ``x1`` is finite and on the manifold, and that the
                log-likelihoods (and ``x_0``) are finite (one host read-back each).

        Returns:
            log-likelihoods of shape ``batch`` (and ``x_0`` if ``return_source``).

        Raises:
            ValueError: see the class docstring.
        """
        m = self.manifold
        x1 = _check_points(m, x1, "x1", validate=validate, data=True)
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        n_probes = check_positive_int(n_probes, "n_probes")
        check_generator(generator)
        if log_p0 is not None:
            check_callable(log_p0, "log_p0")
        grid = make_time_grid(time_grid, steps, dtype=x1.dtype)  # on the CPU: no sync for the direction
        if not bool(grid[0] > grid[-1]):
            raise ValueError("log_likelihood integrates backwards: time_grid must decrease (e.g. (1.0, 0.0))")
        process = ManifoldFlowProcess(m, method, stepping)
        batch = m.batch_shape(x1)
        probes = None
        if divergence == "hutchinson":
            draw_device = generator.device if generator is not None else "cpu"
            signs = torch.randint(0, 2, (n_probes, *batch, m.dim), generator=generator, device=draw_device)
            probes = (2 * signs - 1).to(dtype=x1.dtype, device=x1.device)
        velocity = _guarded(self.velocity, "x1")

        def augmented_field(state, t):
            x, _ = state
            return _divergence(m, velocity, x, t, probes)

        zeros = torch.zeros(batch, dtype=x1.dtype, device=x1.device)
        x0, integral = simulate(process, augmented_field, (x1, zeros), grid, progress=progress)
        # integral = int_1^0 div dt = -int_0^1 div dt
        logp = self._source_density(log_p0, x0, batch) + integral
        if validate and not bool(torch.isfinite(logp).all() & torch.isfinite(x0).all()):
            bad = ~torch.isfinite(logp) | ~torch.isfinite(x0.reshape(*batch, -1)).all(-1)
            raise ValueError(
                f"log_likelihood is not finite for {int(bad.sum())} of {bad.numel()} points: the velocity "
                "or its divergence returned NaN/inf, or the solve diverged; check the model, or take "
                "smaller steps"
            )
        return (logp, x0) if return_source else logp
