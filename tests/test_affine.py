"""Affine Gaussian paths: the scheduler family (closed forms, finite-difference derivatives,
snr inverses), AffinePath samples, prediction-type conversions against the exact posterior of
a Gaussian mixture, whose score is checked by autograd of its density and whose velocity by
the continuity equation."""

import math

import pytest
import torch

from gm import (
    CosineConvexScheduler,
    CosineScheduler,
    ExponentialRateScheduler,
    LinearScheduler,
    LinearVPScheduler,
    PolynomialScheduler,
    Scheduler,
    VEScheduler,
    VPScheduler,
    scheduler_by_name,
)
from manifolds import Euclidean
from rfm import PREDICTION_TYPES, AffinePath, GaussianMixture, GeodesicPath, marginal_fields, prediction_loss

ALL = [
    LinearScheduler(),
    PolynomialScheduler(2),
    CosineConvexScheduler(),
    ExponentialRateScheduler(3.0),
    CosineScheduler(),
    VPScheduler(),
    LinearVPScheduler(),
    VEScheduler(0.05, 5.0),
]
T = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)


def test_closed_forms():
    t = T
    pi = math.pi
    cases = {
        LinearScheduler(): (t, 1 - t),
        PolynomialScheduler(3): (t**3, 1 - t**3),
        CosineScheduler(): (torch.sin(pi * t / 2), torch.cos(pi * t / 2)),
        LinearVPScheduler(): (t, torch.sqrt(1 - t**2)),
        VEScheduler(0.01, 50.0): (torch.ones_like(t), 50.0 * (0.01 / 50.0) ** t),
    }
    for sched, (alpha, sigma) in cases.items():
        torch.testing.assert_close(sched.alpha(t), alpha, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(sched.sigma(t), sigma, rtol=1e-12, atol=1e-14)
    vp = VPScheduler(0.1, 20.0)
    s = 1 - t
    alpha = torch.exp(-0.5 * (0.1 * s + 0.5 * 19.9 * s**2))
    torch.testing.assert_close(vp.alpha(t), alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, torch.ones_like(t), rtol=1e-12, atol=0)
    assert VEScheduler(0.01, 50.0).source_std == 50.0 and vp.source_std == 1.0


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_derivatives_snr_and_inverse(sched):
    h = 1e-6
    for name in ("alpha", "sigma"):
        fd = (getattr(sched, name)(T + h) - getattr(sched, name)(T - h)) / (2 * h)
        torch.testing.assert_close(getattr(sched, "d_" + name)(T), fd, rtol=1e-6, atol=1e-7)
    snr = sched.snr(T)
    torch.testing.assert_close(snr, sched.alpha(T) / sched.sigma(T))
    assert bool((snr.diff() > 0).all())  # increasing
    torch.testing.assert_close(sched.inverse_snr(snr), T, rtol=0, atol=1e-9)
    # The generic numerical inverse agrees with the closed form.
    torch.testing.assert_close(Scheduler._inverse_snr(sched, snr), T, rtol=0, atol=1e-12)
    out = sched(T)
    assert torch.equal(out.alpha, sched.alpha(T)) and torch.equal(out.d_sigma, sched.d_sigma(T))
    ends = sched(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.isfinite(ends.alpha).all() and torch.isfinite(ends.sigma).all()
    assert torch.isfinite(ends.d_sigma).all() != sched.singular_at_one


def test_scheduler_errors():
    with pytest.raises(ValueError, match="t must lie in"):
        VPScheduler().alpha(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="NaN"):
        CosineScheduler().snr(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="snr must lie in"):
        VEScheduler(0.1, 10.0).inverse_snr(torch.tensor([0.01]))  # below snr_0 = 1 / sigma_max
    with pytest.raises(ValueError, match="scheduler name must be one of"):
        scheduler_by_name("cosin")
    with pytest.raises(ValueError, match="beta_max must exceed beta_min"):
        VPScheduler(1.0, 0.5)
    with pytest.raises(ValueError, match="sigma_min must be a positive"):
        VEScheduler(0.0, 1.0)
    assert isinstance(scheduler_by_name("vp", beta_max=10.0), VPScheduler)
    assert isinstance(scheduler_by_name("condot"), LinearScheduler)
    with pytest.raises(ValueError, match="ConvexScheduler"):
        GeodesicPath(Euclidean(2), CosineScheduler())  # a geodesic path needs alpha + sigma = 1


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_affine_path_sample(sched):
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 3, 2, dtype=torch.float64, generator=g)
    x0 = torch.randn(4, 3, 2, dtype=torch.float64, generator=g)
    t = torch.rand(4, dtype=torch.float64, generator=g) * 0.9 + 0.05  # per sample, a prefix of (4, 3)
    path = AffinePath(sched)
    s = path.sample(x0, x1, t)
    a, b = sched.alpha(t)[:, None, None], sched.sigma(t)[:, None, None]
    torch.testing.assert_close(s.x_t, a * x1 + b * x0)
    h = 1e-6
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, rtol=1e-6, atol=1e-6)
    ends = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    if sched.singular_at_one:
        with pytest.raises(ValueError, match="t = 1 is singular"):
            path.sample(x0, x1, ends)
    else:
        e = path.sample(x0, x1, ends)
        assert torch.isfinite(e.x_t).all() and torch.isfinite(e.dx_t).all()
    f32 = path.sample(x0.float(), x1.float(), t.float())
    assert f32.x_t.dtype == torch.float32 and torch.isfinite(f32.dx_t).all()


def test_affine_path_errors():
    path = AffinePath(LinearScheduler())
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="t must have a shape that is a prefix"):
        path.sample(x, x, torch.zeros(3))
    with pytest.raises(ValueError, match="t must lie in"):
        path.sample(x, x, torch.full((4,), 1.5))
    with pytest.raises(ValueError, match="x0 must have x1's shape"):
        path.sample(torch.zeros(4, 3), x, 0.5)
    with pytest.raises(ValueError, match="x1 contains non-finite"):
        path.sample(x, torch.full((4, 2), float("nan")), 0.5)
    with pytest.raises(ValueError, match="scheduler must be a gm.Scheduler"):
        AffinePath("vp")
    with pytest.raises(ValueError, match="from_type must be one of"):
        path.convert(x, x, 0.5, from_type="eps", to_type="x1")
    with pytest.raises(ValueError, match="divides by sigma_t"):
        path.convert(x, x, 1.0, from_type="x1", to_type="x0")
    with pytest.raises(ValueError, match="divides by alpha_t"):
        path.convert(x, x, 0.0, from_type="x0", to_type="x1")


def mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.5], [1.5, 1.0], [0.0, -2.0]], dtype=torch.float64)
    a = torch.tensor(
        [[[0.5, 0.1], [0.1, 0.3]], [[0.2, -0.05], [-0.05, 0.4]], [[0.3, 0.0], [0.0, 0.1]]], dtype=torch.float64
    )
    return GaussianMixture(means, a, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_conversions_against_the_exact_posterior(sched):
    target = mixture()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 2, dtype=torch.float64, generator=g) * 2
    t = torch.rand(64, dtype=torch.float64, generator=g) * 0.9 + 0.05
    fields = marginal_fields(target, sched, x, t)
    exact = {"velocity": fields.velocity, "x1": fields.x1, "x0": fields.x0, "score": fields.score}
    path = AffinePath(sched)
    for source, value in exact.items():
        for goal, want in exact.items():
            got = path.convert(value, x, t, from_type=source, to_type=goal)
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8, msg=f"{source} -> {goal}")
            back = path.convert(got, x, t, from_type=goal, to_type=source)
            torch.testing.assert_close(back, value, rtol=1e-8, atol=1e-8, msg=f"{source} -> {goal} -> {source}")


@pytest.mark.parametrize(
    "sched", [LinearScheduler(), CosineScheduler(), VPScheduler(), VEScheduler(0.05, 5.0)], ids=repr
)
def test_exact_score_and_velocity_oracles(sched):
    target = mixture()
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(16, 2, dtype=torch.float64, generator=g) * 1.5).requires_grad_(True)
    t = (torch.rand(16, dtype=torch.float64, generator=g) * 0.9 + 0.05).requires_grad_(True)
    f = marginal_fields(target, sched, x, t)
    # the score is the gradient of the marginal log-density
    grad_x, grad_t = torch.autograd.grad(f.log_prob.sum(), (x, t), create_graph=True)
    torch.testing.assert_close(f.score, grad_x, rtol=1e-8, atol=1e-10)
    # continuity equation: d/dt log p + div u + u . grad log p = 0
    div = sum(torch.autograd.grad(f.velocity[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    residual = grad_t + div + (f.velocity * grad_x).sum(-1)
    torch.testing.assert_close(residual, torch.zeros_like(residual), rtol=0, atol=1e-7)
    # at t = 0 the marginal is the source: N(0, source_std^2 I) up to alpha_0
    if isinstance(sched, (LinearScheduler, CosineScheduler)):
        f0 = marginal_fields(target, sched, x.detach(), 0.0)
        torch.testing.assert_close(f0.log_prob, -0.5 * (x.detach() ** 2).sum(-1) - math.log(2 * math.pi))


def test_prediction_losses_vanish_at_their_targets_and_agree_in_expectation():
    path = AffinePath(CosineScheduler())
    g = torch.Generator().manual_seed(3)
    x1 = mixture().sample(4096, generator=g)
    t = torch.rand(4096, dtype=torch.float64, generator=g) * 0.9 + 0.05
    s = path.sample(None, x1, t, generator=g)
    assert float(prediction_loss(path, s.dx_t, s, "velocity")) == 0.0
    assert float(prediction_loss(path, s.x1, s, "x1")) == 0.0
    assert float(prediction_loss(path, s.x0, s, "x0")) == 0.0
    sigma = CosineScheduler().sigma(t)[:, None]
    assert float(prediction_loss(path, -s.x0 / sigma, s, "score")) == 0.0
    # The exact posterior beats a perturbed one on every loss (it is the minimiser).
    exact = marginal_fields(mixture(), CosineScheduler(), s.x_t, t)
    for kind, value in (("velocity", exact.velocity), ("x1", exact.x1), ("x0", exact.x0), ("score", exact.score)):
        best = prediction_loss(path, value, s, kind, weight=sigma[:, 0] ** 2 if kind == "score" else None)
        worse = prediction_loss(path, value + 0.1, s, kind, weight=sigma[:, 0] ** 2 if kind == "score" else None)
        assert float(best) < float(worse)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        prediction_loss(path, s.x1, s, "noise")


@pytest.mark.parametrize("target_scheduler", [CosineScheduler(), VPScheduler(), LinearVPScheduler()], ids=repr)
def test_schedule_change_samples_like_the_target_schedule(target_scheduler):
    from rfm import ODESolver, ScheduleChange

    target = mixture()
    condot = LinearScheduler()

    def exact(sched):
        return lambda x, t: marginal_fields(target, sched, x, t).velocity

    changed = ScheduleChange(exact(condot), condot, target_scheduler)
    # the wrapped field is the target schedule's own marginal field
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 2, dtype=torch.float64, generator=g)
    for r in (0.1, 0.5, 0.9):
        torch.testing.assert_close(
            changed(x, torch.tensor(r, dtype=torch.float64)),
            exact(target_scheduler)(x, torch.tensor(r, dtype=torch.float64)),
            rtol=1e-7,
            atol=1e-7,
        )
    # ... so from the same noise both end at the same samples, while the paths differ on the way
    end = 1 - 1e-4
    grid = torch.linspace(0, end, 2, dtype=torch.float64)
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=g)
    m = Euclidean(2)
    via_change = ODESolver(m, changed).sample(x0, time_grid=grid, steps=400, method="rk4", return_intermediates=True)
    own = ODESolver(m, exact(target_scheduler)).sample(
        x0, time_grid=grid, steps=400, method="rk4", return_intermediates=True
    )
    assert (via_change[-1] - own[-1]).abs().max() < 1e-5
    # and the target path is the trained one rescaled, x_B(r) = s_r x_A(t_r): the CondOT flow
    # from x0 / s_0 at t_0 to t_end ends at x_B(r_end) / s_end
    ends = torch.tensor([0.0, end], dtype=torch.float64)
    (t0, t_end), (s0, s_end) = changed.time_and_scale(ends)[:2]
    condot_path = ODESolver(m, exact(condot)).sample(
        x0 / s0, time_grid=torch.stack([t0, t_end]), steps=400, method="rk4", return_intermediates=True
    )
    # (another time grid: rk4 error, amplified for the few points between two modes)
    assert (via_change[-1] - s_end * condot_path[-1]).abs().max() < 1e-3
    assert (via_change[-1] - s_end * condot_path[-1]).abs().median() < 1e-5
    assert (via_change[200] - condot_path[200]).abs().max() > 0.1  # the paths differ on the way


@pytest.mark.parametrize("sched", ALL, ids=repr)
@pytest.mark.parametrize("end", [0.0, 1.0])
def test_every_conversion_at_the_ends_is_finite_or_raises_naming_t(sched, end):
    """At t = 0 and t = 1 (per-sample times, one of them at the end) a conversion either
    returns finite values or raises a ValueError naming t: never NaN/inf (issue #28: VP and
    linear-VP velocity -> x1 gave NaN, x0 -> velocity inf, score -> velocity NaN)."""
    path = AffinePath(sched)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 2, dtype=torch.float64, generator=g)
    prediction = torch.randn(4, 2, dtype=torch.float64, generator=g)
    t = torch.tensor([0.3, end, 0.7, 0.5], dtype=torch.float64)
    for source in PREDICTION_TYPES:
        for goal in PREDICTION_TYPES:
            try:
                got = path.convert(prediction, x, t, from_type=source, to_type=goal)
            except ValueError as error:
                assert str(error).startswith("t: "), (source, goal, str(error))
                continue
            assert torch.isfinite(got).all(), (source, goal, got)


@pytest.mark.parametrize("sched", [VPScheduler(), LinearVPScheduler()], ids=repr)
def test_vp_conversions_through_the_velocity_raise_at_t1(sched):
    path = AffinePath(sched)
    x, u = torch.randn(4, 2), torch.randn(4, 2)
    for source, goal in (
        ("velocity", "x1"),
        ("velocity", "x0"),
        ("x0", "velocity"),
        ("score", "velocity"),
        ("x1", "velocity"),
    ):
        with pytest.raises(ValueError, match=r"^t: converting"):
            path.convert(u, x, torch.ones(4), from_type=source, to_type=goal)
    # just before t = 1 they are finite
    assert torch.isfinite(path.convert(u, x, torch.full((4,), 0.999), from_type="velocity", to_type="x1")).all()
