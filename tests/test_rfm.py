"""rfm: geodesic paths vs finite differences, the loss vs hand computation, solver order of
convergence, and exact likelihoods against analytic densities on R^d, S^2, the torus and SO(3)."""

import math

import pytest
import torch

from gm import CosineConvexScheduler, LinearScheduler, PolynomialScheduler
from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere, hat, so3_exp
from rfm import GeodesicPath, ODESolver, rfm_loss

MANIFOLDS = {
    "euclidean": lambda: Euclidean(3),
    "sphere": lambda: Sphere(2),
    "torus": lambda: FlatTorus(2),
    "so3": lambda: SO3(),
    "se3": lambda: SE3(),
    "product": lambda: Product(Sphere(2), FlatTorus(1), SO3()),
}


def ambient_fd(m, path, x0, x1, t, eps=1e-5):
    """Central finite difference of x_t in t; on the torus via logmap (wrapping)."""
    xp = path.sample(x0, x1, t + eps).x_t
    xm = path.sample(x0, x1, t - eps).x_t
    if isinstance(m, FlatTorus):
        return m.logmap(xm, xp) / (2 * eps)
    if isinstance(m, Product):
        parts = [
            ambient_fd(c, GeodesicPath(c, path.scheduler), a, b, t, eps)
            for c, a, b in zip(m.manifolds, m.split(x0), m.split(x1))
        ]
        return m.join(parts)
    return (xp - xm) / (2 * eps)


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("scheduler", [LinearScheduler(), PolynomialScheduler(2), CosineConvexScheduler()], ids=repr)
def test_geodesic_path_endpoints_manifold_tangent_and_fd(name, scheduler):
    m = MANIFOLDS[name]()
    gen = torch.Generator().manual_seed(0)
    x0 = m.random_base(4, 3, dtype=torch.float64, generator=gen)
    x1 = m.random_base(4, 3, dtype=torch.float64, generator=gen)
    path = GeodesicPath(m, scheduler)
    s0 = path.sample(x0, x1, torch.zeros(4, 3, dtype=torch.float64))
    s1 = path.sample(x0, x1, torch.ones(4, 3, dtype=torch.float64))
    torch.testing.assert_close(s0.x_t, x0)
    torch.testing.assert_close(m.dist(s1.x_t, x1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-7, rtol=0)
    assert torch.isfinite(s1.dx_t).all()
    t = torch.rand(4, 3, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    s = path.sample(x0, x1, t)
    m.check_point(s.x_t, "x_t", atol=1e-10)
    m.check_vector(s.x_t, s.dx_t, "dx_t", atol=1e-10)
    torch.testing.assert_close(s.dx_t, ambient_fd(m, path, x0, x1, t), rtol=1e-6, atol=1e-6)
    # the textbook form kappa'/(1 - kappa) log_{x_t}(x1) (valid for t < 1)
    rate = scheduler.rate(t).reshape(t.shape + (1,) * m.ndim)
    torch.testing.assert_close(s.dx_t, rate * m.logmap(s.x_t, x1), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_geodesic_path_float32_and_gradients_at_endpoints(name):
    m = MANIFOLDS[name]()
    x0 = m.random_base(5, dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    x1 = x0.clone().requires_grad_(True)  # coincident endpoints
    for tval in (0.0, 1.0, 0.5):
        s = GeodesicPath(m).sample(x0, x1, torch.full((5,), tval, dtype=torch.float32))
        assert s.x_t.dtype == torch.float32 and torch.isfinite(s.dx_t).all()
        (s.x_t.sum() + s.dx_t.sum()).backward()
        assert torch.isfinite(x1.grad).all()
        x1.grad = None


def test_geodesic_path_draws_source_and_validates():
    m = Sphere(2)
    x1 = m.random_base(7)
    s = GeodesicPath(m).sample(None, x1, torch.rand(7))
    m.check_point(s.x0)
    with pytest.raises(ValueError, match="trailing shape"):
        GeodesicPath(m).sample(None, torch.zeros(7, 4), torch.rand(7))
    with pytest.raises(ValueError, match="must be a prefix of the batch shape"):
        GeodesicPath(m).sample(None, x1, torch.rand(3))
    with pytest.raises(ValueError, match="same shape"):
        GeodesicPath(m).sample(m.random_base(6), x1, torch.rand(7))


def test_rfm_loss_matches_metric_by_hand():
    m = SO3()
    gen = torch.Generator().manual_seed(2)
    x0, x1 = m.random_base(6, dtype=torch.float64, generator=gen), m.random_base(6, dtype=torch.float64, generator=gen)
    s = GeodesicPath(m).sample(x0, x1, torch.rand(6, generator=gen, dtype=torch.float64))
    v = m.proju(s.x_t, torch.randn(6, 3, 3, generator=gen, dtype=torch.float64))
    expected = 0.5 * ((v - s.dx_t) ** 2).sum((-1, -2))  # metric 1/2 tr(A^T A)
    torch.testing.assert_close(rfm_loss(m, v, s, reduction="none"), expected)
    torch.testing.assert_close(rfm_loss(m, v, s), expected.mean())
    w = torch.arange(6, dtype=torch.float64)
    torch.testing.assert_close(rfm_loss(m, v, s, weight=w, reduction="sum"), (w * expected).sum())
    assert float(rfm_loss(m, s.dx_t, s)) == 0.0
    with pytest.raises(ValueError, match="reduction"):
        rfm_loss(m, v, s, reduction="max")
    with pytest.raises(ValueError, match="v_pred shape"):
        rfm_loss(m, v[:3], s)


# ------------------------------------------------------------------ ODE solver
OMEGA = 1.3


def rotation_field(x, t):
    """Rotation about the z-axis on S^2 (a Killing field: divergence free)."""
    return OMEGA * torch.stack([-x[..., 1], x[..., 0], torch.zeros_like(x[..., 2])], -1)


def rotate_z(x, angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1], x[..., 2]], -1)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_solver_order_of_convergence_on_sphere(method, order):
    m = Sphere(2)
    x0 = m.random_base(16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = rotate_z(x0, OMEGA)
    # a time-dependent speed makes the time argument matter: angle = OMEGA * (t + t^2) / 2
    field = lambda x, t: rotation_field(x, t) * (1 + 2 * t) / 2  # noqa: E731
    solver = ODESolver(m, field)
    errs = [float(m.dist(solver.sample(x0, steps=n, method=method), exact).max()) for n in (10, 20)]
    measured = math.log2(errs[0] / errs[1])
    assert abs(measured - order) < 0.35, (errs, measured)


def test_solver_exp_stepping_backwards_partial_grid_intermediates():
    m = Sphere(2)
    x = m.random_base(8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    solver = ODESolver(m, rotation_field)
    traj = solver.sample(x, time_grid=(0.9, 0.2), steps=50, method="rk4", stepping="exp", return_intermediates=True)
    assert traj.shape == (51, 8, 3)
    for state in traj:
        m.check_point(state, atol=1e-10)
    torch.testing.assert_close(traj[-1], rotate_z(x, -0.7 * OMEGA), atol=1e-4, rtol=0)
    projected = solver.sample(x, time_grid=(0.9, 0.2), steps=50, method="rk4")
    torch.testing.assert_close(projected, rotate_z(x, -0.7 * OMEGA), atol=1e-8, rtol=0)
    grid = torch.tensor([0.0, 0.1, 0.5, 1.0])
    out = solver.sample(x, time_grid=grid, method="rk4")
    assert out.shape == x.shape


def test_solver_so3_constant_body_velocity_is_exact():
    m = SO3()
    gen = torch.Generator().manual_seed(5)
    r0 = m.random_base(5, 2, dtype=torch.float64, generator=gen)
    w = torch.randn(3, dtype=torch.float64, generator=gen)
    solver = ODESolver(m, lambda x, t: x @ hat(w))
    for stepping in ("project", "exp"):
        r1 = solver.sample(r0, steps=40, method="rk4", stepping=stepping)
        torch.testing.assert_close(r1, r0 @ so3_exp(w), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="method must be"):
        solver.sample(r0, method="rk45")
    with pytest.raises(ValueError, match="x0"):
        solver.sample(r0 * 2)


# ------------------------------------------------------------------ exact likelihood
def test_likelihood_linear_field_on_rd_gaussian_base():
    d = 3
    m = Euclidean(d)
    gen = torch.Generator().manual_seed(6)
    a = 0.5 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    solver = ODESolver(m, lambda x, t: x @ a.T)
    x1 = 2 * torch.randn(20, d, generator=gen, dtype=torch.float64)
    # x1 = expm(A) x0 with x0 ~ N(0, I)  =>  x1 ~ N(0, expm(A) expm(A)^T)
    e = torch.linalg.matrix_exp(a)
    cov = e @ e.T
    exact = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64), cov).log_prob(x1)
    torch.testing.assert_close(ODESolver(m, solver.velocity).log_likelihood(x1, steps=80), exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(solver.log_likelihood(x1, steps=1000, method="euler"), exact, atol=0, rtol=5e-3)


def test_likelihood_sphere_rotation_field_keeps_uniform_and_latitude_field_analytic():
    m = Sphere(2)
    x1 = m.random_base(32, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    lp = ODESolver(m, rotation_field).log_likelihood(x1, steps=20)
    torch.testing.assert_close(lp, torch.full_like(lp, -math.log(4 * math.pi)), atol=1e-10, rtol=0)
    c = 1.5

    def latitude_field(x, t):
        ez = torch.zeros_like(x)
        ez[..., 2] = 1
        return c * (ez - x[..., 2:3] * x)

    # dz/dt = c (1 - z^2): z_t = tanh(atanh(z_0) + c t); p_1 = p_0 (1 - z_0^2) / (1 - z_1^2)
    lp, x0 = ODESolver(m, latitude_field).log_likelihood(x1, steps=40, return_source=True)
    z1 = x1[:, 2]
    z0 = torch.tanh(torch.atanh(z1) - c)
    exact = -math.log(4 * math.pi) + torch.log((1 - z0**2) / (1 - z1**2))
    torch.testing.assert_close(lp, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(x0[:, 2], z0, atol=1e-6, rtol=0)


def test_likelihood_torus_sine_field_analytic_and_hutchinson_unbiased():
    m = FlatTorus(2)
    x1 = m.random_base(16, dtype=torch.float64, generator=torch.Generator().manual_seed(8))

    def field(x, t):
        # coordinate 0: dx/dt = sin(x); coordinate 1 is sheared by coordinate 0 (non-symmetric J)
        return torch.stack([torch.sin(x[..., 0]), torch.cos(x[..., 0])], -1)

    # tan(x/2) = tan(x0/2) e^t, so p_1(x1) = p_0 * sin(x0)/sin(x1)
    lp = ODESolver(m, field).log_likelihood(x1, steps=40)
    t1 = torch.tan(x1[:, 0] / 2)
    x0 = 2 * torch.atan(t1 * math.exp(-1.0))
    exact = -2 * math.log(2 * math.pi) + torch.log(torch.sin(x0) / torch.sin(x1[:, 0]))
    torch.testing.assert_close(lp, exact, atol=1e-6, rtol=0)
    est = ODESolver(m, field).log_likelihood(
        x1, steps=40, divergence="hutchinson", n_probes=1, generator=torch.Generator().manual_seed(0)
    )
    # Rademacher probes get the diagonal exactly; the shear term -sin(x) z0 z1 averages out
    # as 1/sqrt(n_probes) (|error| <~ 1/16 here).
    many = ODESolver(m, field).log_likelihood(
        x1, steps=40, divergence="hutchinson", n_probes=256, generator=torch.Generator().manual_seed(1)
    )
    assert float((many - exact).abs().max()) < 0.25
    assert float((many - exact).abs().mean()) < float((est - exact).abs().mean())
    assert torch.isfinite(est).all()


def test_hutchinson_unbiased_on_sphere_with_nonsymmetric_jacobian():
    m = Sphere(2)
    x1 = m.random_base(64, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    a = torch.tensor([[0.3, 1.0, -0.4], [0.2, -0.5, 0.7], [0.9, 0.1, 0.2]], dtype=torch.float64)
    field = lambda x, t: m.proju(x, x @ a.T)  # noqa: E731
    exact = ODESolver(m, field).log_likelihood(x1, steps=20)
    ests = torch.stack(
        [
            ODESolver(m, field).log_likelihood(
                x1, steps=20, divergence="hutchinson", n_probes=1, generator=torch.Generator().manual_seed(k)
            )
            for k in range(40)
        ]
    )
    assert float((ests.std(0) ** 2).mean()) > 1e-6  # genuinely stochastic
    err = (ests.mean(0) - exact).abs() / (ests.std(0) / math.sqrt(40) + 1e-12)
    assert float(err.mean()) < 2.0, float(err.mean())


def test_likelihood_so3_and_product_and_errors():
    so3 = SO3()
    gen = torch.Generator().manual_seed(10)
    r = so3.random_base(8, dtype=torch.float64, generator=gen)
    w = torch.randn(3, dtype=torch.float64, generator=gen)
    # left-invariant fields are divergence free: Haar density is preserved
    lp = ODESolver(so3, lambda x, t: x @ hat(w)).log_likelihood(r, steps=10)
    torch.testing.assert_close(lp, torch.full_like(lp, -math.log(8 * math.pi**2)), atol=1e-9, rtol=0)
    # right-multiplication by a fixed matrix (a non-Killing field) must be measured correctly:
    # v(R) = proj(R A) with symmetric-free A: compare exact vs a finite-difference divergence
    p = Product(Sphere(2), FlatTorus(1))
    x = p.random_base(8, dtype=torch.float64, generator=gen)
    field = lambda y, t: p.join([rotation_field(p.split(y)[0], t), torch.sin(p.split(y)[1])])  # noqa: E731
    lp = ODESolver(p, field).log_likelihood(x, steps=40)
    ang = p.split(x)[1][..., 0]
    a0 = 2 * torch.atan(torch.tan(ang / 2) * math.exp(-1.0))
    exact = -math.log(4 * math.pi) - math.log(2 * math.pi) + torch.log(torch.sin(a0) / torch.sin(ang))
    torch.testing.assert_close(lp, exact, atol=1e-6, rtol=0)
    solver = ODESolver(so3, lambda x, t: x @ hat(w))
    with pytest.raises(ValueError, match="decrease"):
        solver.log_likelihood(r, time_grid=(0.0, 1.0))
    with pytest.raises(ValueError, match="divergence must be"):
        solver.log_likelihood(r, divergence="approx")
    with pytest.raises(ValueError, match="n_probes"):
        solver.log_likelihood(r, divergence="hutchinson", n_probes=0)


def test_so3_divergence_matches_finite_differences():
    """Exact divergence of a non-invariant SO(3) field vs central differences along R hat(e_i)."""
    from rfm.solver import riemannian_divergence

    m = SO3()
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    field = lambda x, t: m.proju(x, x @ a @ x)  # noqa: E731
    r = m.random_base(6, dtype=torch.float64, generator=gen)
    _, div = riemannian_divergence(m, field, r, torch.tensor(0.0, dtype=torch.float64))
    eps = 1e-5
    fd = torch.zeros(6, dtype=torch.float64)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = 1
        rp, rm = r @ so3_exp(eps * e), r @ so3_exp(-eps * e)
        # body-frame components of the field, differentiated along the left-invariant frame
        wp = m.to_lie(rp, field(rp, 0))[..., i]
        wm = m.to_lie(rm, field(rm, 0))[..., i]
        fd += (wp - wm) / (2 * eps)
    torch.testing.assert_close(div, fd, atol=1e-6, rtol=0)


def test_data_end_grid_resolves_a_flow_onto_a_narrow_gaussian():
    # conditional OT flow from N(0, 1) onto N(mu, s^2) with s = 1e-2:
    # x_t = (1 - (1 - s) t) x0 + t mu, v(x, t) = (mu - (1 - s) x) / (1 - (1 - s) t), stiff near t = 1
    from gm import data_end_time_grid

    s, mu = 1e-2, 0.7
    m = Euclidean(1)

    def velocity(x, t):
        return (mu - (1 - s) * x) / (1 - (1 - s) * t)

    x1 = mu + s * torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    exact = torch.distributions.Normal(mu, s).log_prob(x1[:, 0])
    solver = ODESolver(m, velocity)
    uniform_err = (solver.log_likelihood(x1, steps=48) - exact).abs().max()
    warped_err = (
        (solver.log_likelihood(x1, steps=None, time_grid=data_end_time_grid(48, 3.0, backward=True)) - exact)
        .abs()
        .max()
    )
    assert warped_err < 1e-3 < uniform_err
