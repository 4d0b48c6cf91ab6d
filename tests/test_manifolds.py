"""Geometry tests: algebraic identities (hypothesis), hard points, float32 accuracy against
float64, geomstats as an oracle, exact Haar sampling, geoopt optimisation."""

import math

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere, hat, so3_exp, so3_log, vee
from manifolds.so3 import rotation_angle

MANIFOLDS = {
    "euclidean3": lambda: Euclidean(3),
    "sphere2": lambda: Sphere(2),
    "sphere5": lambda: Sphere(5),
    "torus3": lambda: FlatTorus(3),
    "so3": lambda: SO3(),
    "se3": lambda: SE3(),
    "product": lambda: Product(Sphere(2), FlatTorus(2), SO3(), Euclidean(1)),
}
DTYPES = [torch.float32, torch.float64]
# max |u| (per component for products) keeping exp injective
INJECTIVITY = {"euclidean3": 3.0, "sphere2": 3.0, "sphere5": 3.0, "torus3": 3.0, "so3": 3.0, "se3": 3.0, "product": 3.0}


def tol(dtype):
    return dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)


def random_tangent(m, x, scale, gen):
    """A tangent vector at x with each component's metric norm uniform in [0, scale)."""
    if isinstance(m, Product):
        return m.join([random_tangent(c, xi, scale, gen) for c, xi in zip(m.manifolds, m.split(x))])
    if isinstance(m, FlatTorus):
        # torus injectivity is per coordinate: |u_i| < pi
        return (torch.rand(x.shape, generator=gen, dtype=torch.float64).to(x.dtype) * 2 - 1) * scale
    u = m.proju(x, torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype))
    n = m.norm(x, u)
    n = n.reshape(n.shape + (1,) * m.ndim)
    r = torch.rand(n.shape, generator=gen, dtype=torch.float64).to(x.dtype) * scale
    return u / n * r


batch_shapes = st.sampled_from([(), (1,), (4,), (2, 3), (2, 1, 3)])


@pytest.mark.parametrize("name", MANIFOLDS)
@given(seed=st.integers(0, 2**31 - 1), batch=batch_shapes, dtype=st.sampled_from(DTYPES))
def test_exp_log_identities(name, seed, batch, dtype):
    m = MANIFOLDS[name]()
    gen = torch.Generator().manual_seed(seed)
    x = m.random_base(*batch, dtype=dtype, generator=gen)
    y = m.random_base(*batch, dtype=dtype, generator=gen)
    assert x.shape == (*batch, *m.point_shape) and x.dtype == dtype
    m.check_point(x)
    u = random_tangent(m, x, INJECTIVITY[name], gen)
    # log(exp(u)) == u inside the injectivity radius
    z = m.expmap(x, u)
    m.check_point(z, "expmap(x, u)")
    torch.testing.assert_close(m.logmap(x, z), u, **tol(dtype))
    # exp(log(y)) == y, and log is tangent with norm == dist
    v = m.logmap(x, y)
    m.check_vector(x, v, "logmap(x, y)", atol=1e-4 if dtype == torch.float32 else 1e-10)
    torch.testing.assert_close(m.expmap(x, v), y, **tol(dtype))
    torch.testing.assert_close(m.norm(x, v), m.dist(x, y), **tol(dtype))
    # symmetric distance, zero on the diagonal
    torch.testing.assert_close(m.dist(x, y), m.dist(y, x), **tol(dtype))
    assert float(m.dist(x, x).abs().max()) < (1e-3 if dtype == torch.float32 else 1e-7)
    # projections
    px = m.projx(x)
    torch.testing.assert_close(m.projx(px), px, **tol(dtype))
    amb = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    pu = m.proju(x, amb)
    m.check_vector(x, pu, "proju", atol=1e-4 if dtype == torch.float32 else 1e-10)
    torch.testing.assert_close(m.proju(x, pu), pu, **tol(dtype))
    # base_logprob has the batch shape
    assert m.base_logprob(x).shape == batch


@pytest.mark.parametrize("name", MANIFOLDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_gradients_at_coincident_points_and_zero_vectors(name, dtype):
    m = MANIFOLDS[name]()
    x = m.random_base(3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    xa = x.clone().requires_grad_(True)
    ya = x.clone().requires_grad_(True)
    out = m.dist(xa, ya).sum() + m.logmap(xa, ya).square().sum()
    out.backward()
    assert torch.isfinite(xa.grad).all() and torch.isfinite(ya.grad).all()
    u = torch.zeros_like(x).requires_grad_(True)
    y = m.expmap(x, u)
    torch.testing.assert_close(y, m.projx(x), **tol(dtype))
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(u.grad).all()
    n = m.norm(x, u)
    n.sum().backward()
    assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere_antipodal_points(dtype):
    s = Sphere(2)
    x = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    y = (-x.detach()).clone().requires_grad_(True)
    d = s.dist(x, y)
    torch.testing.assert_close(d, torch.full_like(d, math.pi))
    log = s.logmap(x, y)
    torch.testing.assert_close(s.norm(x, log), torch.full_like(d, math.pi))
    torch.testing.assert_close(s.expmap(x, log), y, atol=1e-5 if dtype == torch.float32 else 1e-12, rtol=0)
    (d.sum() + log.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("angle", [1e-4, 1e-3, 1e-2, 0.3, math.pi - 1e-2, math.pi - 1e-3])
def test_sphere_float32_accuracy_close_and_near_antipodal(angle):
    """float32 dist/log on float32 points agree with float64 math on the same points."""
    s = Sphere(2)
    gen = torch.Generator().manual_seed(1)
    x64 = s.random_base(256, dtype=torch.float64, generator=gen)
    u = random_tangent(s, x64, 1.0, gen)
    u = u / s.norm(x64, u)[..., None] * angle
    x32, y32 = x64.float(), s.expmap(x64, u).float()
    x_ref, y_ref = s.projx(x32.double()), s.projx(y32.double())
    d32, d_ref = s.dist(x32, y32).double(), s.dist(x_ref, y_ref)
    rel = ((d32 - d_ref).abs() / d_ref).max()
    assert rel < 2e-3 if angle < 1e-3 else rel < 2e-4, float(rel)
    log32, log_ref = s.logmap(x32, y32).double(), s.logmap(x_ref, y_ref)
    err = (log32 - log_ref).norm(dim=-1) / log_ref.norm(dim=-1)
    limit = 2e-3 if angle < 1e-3 else (5e-3 if angle > 3.14 else 2e-4)
    assert err.max() < limit, float(err.max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("angle", [math.pi, math.pi - 1e-7, math.pi - 1e-4, math.pi - 1e-2, 2.0, 1e-4, 0.0])
def test_so3_log_at_and_near_pi(dtype, angle):
    gen = torch.Generator().manual_seed(2)
    axis = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    w = axis * angle
    q = so3_exp(w).to(dtype)
    w_hat = so3_log(q)
    assert torch.isfinite(w_hat).all()
    # either w or (at exactly pi) -w is a valid log; compare the rotation and the angle
    torch.testing.assert_close(so3_exp(w_hat), q, atol=5e-6 if dtype == torch.float32 else 1e-12, rtol=0)
    ang_err = (w_hat.double().norm(dim=-1) - angle).abs().max()
    assert ang_err < (2e-3 if dtype == torch.float32 else 1e-7), float(ang_err)
    if angle < math.pi - 1e-3:
        torch.testing.assert_close(w_hat.double(), w, atol=2e-5 if dtype == torch.float32 else 1e-10, rtol=0)
    qa = q.clone().requires_grad_(True)
    (so3_log(qa).sum() + rotation_angle(qa).sum()).backward()
    assert torch.isfinite(qa.grad).all()


@pytest.mark.parametrize("angle", [1e-4, 1e-3, 1e-2, 1.0, math.pi - 1e-2])
def test_so3_float32_dist_matches_float64(angle):
    m = SO3()
    gen = torch.Generator().manual_seed(3)
    x = m.random_base(256, dtype=torch.float64, generator=gen)
    axis = torch.randn(256, 3, generator=gen, dtype=torch.float64)
    w = axis / axis.norm(dim=-1, keepdim=True) * angle
    y = x @ so3_exp(w)
    x32, y32 = x.float(), y.float()
    d32 = m.dist(x32, y32).double()
    d_ref = m.dist(m.projx(x32.double()), m.projx(y32.double()))
    rel = ((d32 - d_ref).abs() / d_ref).max()
    assert rel < (5e-3 if angle < 1e-3 else 5e-4), float(rel)
    torch.testing.assert_close(m.dist(x, y), torch.full((256,), angle, dtype=torch.float64), atol=1e-12, rtol=1e-12)


def test_so3_dist_is_norm_of_w_and_tangent_convention():
    m = SO3()
    gen = torch.Generator().manual_seed(4)
    x = m.random_base(100, dtype=torch.float64, generator=gen)
    w = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    w = w / w.norm(dim=-1, keepdim=True) * torch.rand(100, 1, generator=gen, dtype=torch.float64) * math.pi
    u = x @ hat(w)
    torch.testing.assert_close(m.norm(x, u), w.norm(dim=-1))
    torch.testing.assert_close(m.dist(x, m.expmap(x, u)), w.norm(dim=-1))
    torch.testing.assert_close(m.expmap(x, u), x @ torch.linalg.matrix_exp(hat(w)))
    torch.testing.assert_close(vee(hat(w)), w)


def test_torus_projection_float32_range():
    t = FlatTorus(2)
    x = torch.tensor([[-1e-9, -1e-30], [2 * math.pi, 4 * math.pi + 1e-7], [-2 * math.pi, 1e6]], dtype=torch.float32)
    p = t.projx(x)
    assert bool(((p >= 0) & (p < 2 * math.pi)).all()), p
    assert bool((p < torch.tensor(2 * math.pi, dtype=torch.float32)).all())
    d = t.logmap(torch.zeros(2), torch.tensor([math.pi - 1e-3, 2 * math.pi - 0.1]))
    torch.testing.assert_close(d, torch.tensor([math.pi - 1e-3, -0.1]))
    assert float(t.dist(torch.tensor([0.05]), torch.tensor([2 * math.pi - 0.05]))) == pytest.approx(0.1, abs=1e-6)


# ------------------------------------------------------------------ geomstats oracle
@pytest.fixture
def geomstats():
    # geomstats' pytorch backend computes in torch's default dtype and switches it to float64 on
    # import: run the oracle in float64 and restore the default for the other tests.
    default = torch.get_default_dtype()
    pytest.importorskip("geomstats", reason="geomstats is the dev-extra oracle")
    from geomstats.geometry.hypersphere import Hypersphere
    from geomstats.geometry.special_orthogonal import SpecialOrthogonal

    torch.set_default_dtype(torch.float64)
    yield Hypersphere, SpecialOrthogonal
    torch.set_default_dtype(default)


def test_sphere_matches_geomstats(geomstats):
    Hypersphere, _ = geomstats
    gsm = Hypersphere(2)
    s = Sphere(2)
    gen = torch.Generator().manual_seed(5)
    x = s.random_base(50, dtype=torch.float64, generator=gen)
    y = s.random_base(50, dtype=torch.float64, generator=gen)
    u = random_tangent(s, x, 3.0, gen)
    torch.testing.assert_close(s.dist(x, y), gsm.metric.dist(x, y).to(torch.float64), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s.logmap(x, y), gsm.metric.log(y, x).to(torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.expmap(x, u), gsm.metric.exp(u, x).to(torch.float64), rtol=1e-10, atol=1e-10)


def test_so3_matches_geomstats(geomstats):
    _, SpecialOrthogonal = geomstats
    gsm = SpecialOrthogonal(3, equip=True)
    m = SO3()
    gen = torch.Generator().manual_seed(6)
    x = m.random_base(50, dtype=torch.float64, generator=gen)
    y = m.random_base(50, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(m.dist(x, y), gsm.metric.dist(x, y).to(torch.float64), rtol=1e-9, atol=1e-9)
    # geomstats' bi-invariant metric on matrices uses the same 1/2 tr(A^T B) normalisation
    u = m.logmap(x, y)
    torch.testing.assert_close(
        m.inner(x, u, u), gsm.metric.inner_product(u, u, x).to(torch.float64), rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(u, gsm.metric.log(y, x).to(torch.float64), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(m.expmap(x, u), gsm.metric.exp(u, x).to(torch.float64), rtol=1e-9, atol=1e-9)


def test_torus_matches_geomstats_circles(geomstats):
    Hypersphere, _ = geomstats
    circle = Hypersphere(1)
    t = FlatTorus(3)
    gen = torch.Generator().manual_seed(7)
    x = t.random_base(40, dtype=torch.float64, generator=gen)
    y = t.random_base(40, dtype=torch.float64, generator=gen)

    def emb(a):
        return torch.stack([torch.cos(a), torch.sin(a)], -1)

    per_coord = circle.metric.dist(emb(x).reshape(-1, 2), emb(y).reshape(-1, 2)).reshape(40, 3).to(torch.float64)
    torch.testing.assert_close(t.dist(x, y), per_coord.norm(dim=-1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t.logmap(x, y).abs(), per_coord, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ base distributions
def test_so3_haar_angle_distribution_goodness_of_fit():
    r = SO3().random_base(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    a = rotation_angle(r).numpy()
    # density (1 - cos a)/pi on [0, pi]  =>  CDF (a - sin a)/pi
    res = stats.kstest(a, lambda v: (v - np.sin(v)) / np.pi)
    assert res.pvalue > 1e-3, res
    # a naive "uniform angle" sampler would fail this test
    bad = np.random.default_rng(0).uniform(0, np.pi, 20000)
    assert stats.kstest(bad, lambda v: (v - np.sin(v)) / np.pi).pvalue < 1e-6
    # left invariance: g @ R has the same angle law around g
    g = SO3().random_base(1, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    a2 = SO3().dist(g, g @ r).numpy()
    assert stats.kstest(a2, lambda v: (v - np.sin(v)) / np.pi).pvalue > 1e-3


def test_so3_volume_matches_base_logprob():
    """Integrate the exp-map volume factor 2(1 - cos|w|)/|w|^2 over the ball of radius pi:
    the total must be exp(-base_logprob) = 8 pi^2."""
    a = torch.linspace(0, math.pi, 200001, dtype=torch.float64)
    integrand = (
        4 * math.pi * a**2 * torch.where(a > 0, 2 * (1 - torch.cos(a)) / a.clamp_min(1e-300) ** 2, torch.ones_like(a))
    )
    volume = torch.trapezoid(integrand, a)
    lp = SO3().base_logprob(torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(-lp, torch.log(volume), rtol=1e-10, atol=1e-10)


def test_sphere_uniform_and_logprob():
    s = Sphere(2)
    x = s.random_base(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    # Archimedes: each coordinate of a uniform point on S^2 is uniform on [-1, 1]
    assert stats.kstest(x[:, 2].numpy(), "uniform", args=(-1, 2)).pvalue > 1e-3
    assert float(s.base_logprob(x[:1])) == pytest.approx(-math.log(4 * math.pi), abs=1e-12)
    assert float(Sphere(1).base_logprob(torch.tensor([1.0, 0.0]))) == pytest.approx(-math.log(2 * math.pi), abs=1e-6)


def test_base_logprobs_closed_forms():
    x = torch.zeros(2, 3, dtype=torch.float64)
    torch.testing.assert_close(
        Euclidean(3).base_logprob(x), torch.full((2,), -1.5 * math.log(2 * math.pi), dtype=torch.float64)
    )
    torch.testing.assert_close(
        FlatTorus(3).base_logprob(x), torch.full((2,), -3 * math.log(2 * math.pi), dtype=torch.float64)
    )
    se3 = SE3()
    p = se3.from_rt(torch.eye(3, dtype=torch.float64), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    expected = -math.log(8 * math.pi**2) - 0.5 - 1.5 * math.log(2 * math.pi)
    assert float(se3.base_logprob(p)) == pytest.approx(expected, abs=1e-12)
    prod = Product(Sphere(2), FlatTorus(1))
    assert float(prod.base_logprob(prod.random_base())) == pytest.approx(
        -math.log(4 * math.pi) - math.log(2 * math.pi), abs=1e-6
    )


def test_torus_base_uniform():
    x = FlatTorus(2).random_base(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    assert stats.kstest(x[:, 0].numpy(), "uniform", args=(0, 2 * math.pi)).pvalue > 1e-3


# ------------------------------------------------------------------ structure
def test_se3_rt_roundtrip_and_product_metric():
    se3 = SE3()
    gen = torch.Generator().manual_seed(12)
    r = SO3().random_base(5, 7, dtype=torch.float64, generator=gen)
    t = torch.randn(5, 7, 3, dtype=torch.float64, generator=gen)
    x = se3.from_rt(r, t)
    assert x.shape == (5, 7, 4, 4)
    r2, t2 = se3.to_rt(x)
    assert torch.equal(r2, r) and torch.equal(t2, t)
    y = se3.random_base(5, 7, dtype=torch.float64, generator=gen)
    ry, ty = se3.to_rt(y)
    expected = torch.sqrt(SO3().dist(r, ry) ** 2 + ((t - ty) ** 2).sum(-1))
    torch.testing.assert_close(se3.dist(x, y), expected)


def test_product_split_join_and_metric():
    p = Product(Sphere(2), SO3(), FlatTorus(2))
    gen = torch.Generator().manual_seed(13)
    x = p.random_base(6, dtype=torch.float64, generator=gen)
    y = p.random_base(6, dtype=torch.float64, generator=gen)
    parts = p.split(x)
    assert [q.shape for q in parts] == [(6, 3), (6, 3, 3), (6, 2)]
    assert torch.equal(p.join(parts), x)
    expected = sum(m.dist(a, b) ** 2 for m, a, b in zip(p.manifolds, parts, p.split(y))).sqrt()
    torch.testing.assert_close(p.dist(x, y), expected)
    assert p.dim == 2 + 3 + 2


def test_polar_projection_and_gradients():
    m = SO3()
    gen = torch.Generator().manual_seed(14)
    r = m.random_base(4, dtype=torch.float64, generator=gen)
    noisy = r + 0.1 * torch.randn(4, 3, 3, generator=gen, dtype=torch.float64)
    p = m.projx(noisy)
    m.check_point(p)
    # nearest rotation: no rotation sampled nearby is closer in Frobenius norm
    cand = p[:, None] @ so3_exp(0.05 * torch.randn(4, 200, 3, generator=gen, dtype=torch.float64))
    assert bool(
        (((cand - noisy[:, None]) ** 2).sum((-1, -2)) >= ((p - noisy) ** 2).sum((-1, -2))[:, None] - 1e-12).all()
    )
    torch.testing.assert_close(m.projx(r), r)
    # gradients match finite differences, also at an exact rotation (repeated singular values)
    assert torch.autograd.gradcheck(lambda a: m.projx(a), (noisy.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda a: m.projx(a), (r.clone().requires_grad_(True),))
    # reflections are mapped to SO(3), not O(3)
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert float(torch.linalg.det(m.projx(refl))) == pytest.approx(1.0)


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize("name", MANIFOLDS)
def test_check_point_errors(name):
    m = MANIFOLDS[name]()
    x = m.random_base(3, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    m.check_point(x)
    with pytest.raises(ValueError, match="trailing shape"):
        m.check_point(x[..., :-1], "points")
    bad = x.clone()
    bad.view(3, -1)[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        m.check_point(bad)
    if name != "euclidean3":
        off = x.clone() + 0.1
        with pytest.raises(
            ValueError,
            match=r"^start: 3 of 3 points off the manifold; point is off .*"
            r"project it with `manifold.projx\(start\)`",
        ):
            m.check_point(off if name != "torus3" else x - 7.0, "start")
    with pytest.raises(ValueError, match="floating-point"):
        m.check_point(x.long())


def test_constructor_errors():
    for cls in (Euclidean, Sphere, FlatTorus):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            cls(0)
    with pytest.raises(ValueError, match="at least one"):
        Product()


# ------------------------------------------------------------------ geoopt integration
@pytest.mark.parametrize("name", ["sphere2", "so3", "se3", "torus3", "product"])
def test_geoopt_riemannian_adam_stays_on_manifold(name):
    m = MANIFOLDS[name]()
    gen = torch.Generator().manual_seed(15)
    target = m.random_base(8, dtype=torch.float64, generator=gen)
    start = m.expmap(target, random_tangent(m, target, 1.0, gen))
    p = geoopt.ManifoldParameter(start.clone(), manifold=m)
    opt = geoopt.optim.RiemannianAdam([p], lr=0.05)
    initial = float(m.dist(p.detach(), target).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = (m.dist(p, target) ** 2).sum()
        loss.backward()
        opt.step()
    m.check_point(p.detach(), "optimised parameter", atol=1e-9)
    assert float(m.dist(p.detach(), target).mean()) < 0.05 * initial


def test_many_batch_dims_residues():
    m = SO3()
    x = m.random_base(2, 5, 7)
    y = m.random_base(2, 5, 7)
    assert m.logmap(x, y).shape == (2, 5, 7, 3, 3)
    assert m.dist(x, y).shape == (2, 5, 7)
    assert m.inner(x, m.logmap(x, y), keepdim=True).shape == (2, 5, 7, 1, 1)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_closed_form_geodesic_matches_jvp_of_expmap_and_basis_is_orthonormal(name):
    from manifolds.base import RiemannianManifold

    m = MANIFOLDS[name]()
    gen = torch.Generator().manual_seed(16)
    x = m.random_base(3, 2, dtype=torch.float64, generator=gen)
    u = random_tangent(m, x, 3.0, gen)
    s = torch.rand(3, 2, generator=gen, dtype=torch.float64)
    point, velocity = m.geodesic(x, u, s)
    ref_point, ref_velocity = RiemannianManifold.geodesic(m, x, u, s)
    torch.testing.assert_close(point, ref_point)
    torch.testing.assert_close(velocity, ref_velocity)
    torch.testing.assert_close(point, m.expmap(x, s.reshape(s.shape + (1,) * m.ndim) * u))
    basis = m.tangent_basis(x)
    assert basis.shape == (3, 2, m.dim, *m.point_shape)
    xb = x.unsqueeze(-m.ndim - 1)
    gram = m.inner(xb.unsqueeze(-m.ndim - 1), basis.unsqueeze(-m.ndim - 1), basis.unsqueeze(-m.ndim - 2))
    torch.testing.assert_close(
        gram, torch.eye(m.dim, dtype=torch.float64).expand(3, 2, m.dim, m.dim), atol=1e-12, rtol=0
    )
    for i in range(m.dim):
        m.check_vector(x, basis[..., i, :, :] if m.ndim == 2 else basis[..., i, :], "basis", atol=1e-12)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_geodesic_between_equals_geodesic_of_logmap(name):
    m = MANIFOLDS[name]()
    gen = torch.Generator().manual_seed(17)
    x = m.random_base(3, 2, dtype=torch.float64, generator=gen)
    y = m.random_base(3, 2, dtype=torch.float64, generator=gen)
    s = torch.rand(3, 2, generator=gen, dtype=torch.float64)
    point, velocity = m.geodesic_between(x, y, s)
    ref_point, ref_velocity = m.geodesic(x, m.logmap(x, y), s)
    torch.testing.assert_close(point, ref_point, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(velocity, ref_velocity, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere_geodesic_between_hard_points(dtype):
    """Coincident points: constant path, zero velocity, and the gradient of the velocity in y
    is the tangent projection (the derivative of log_x at x). Antipodal pairs: a half great
    circle of speed pi ending at y. Near-antipodal float32 agrees with float64."""
    sph = Sphere(2)
    gen = torch.Generator().manual_seed(18)
    x = sph.random_base(6, dtype=dtype, generator=gen)
    y = x.clone().requires_grad_(True)
    s = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0, 1.0], dtype=dtype)
    point, velocity = sph.geodesic_between(x, y, s)
    torch.testing.assert_close(point, x, **tol(dtype))
    assert float(velocity.abs().max()) < 1e-30  # theta is clamped to sqrt(tiny), not 0
    r = torch.randn(6, 3, generator=gen, dtype=torch.float64).to(dtype)
    (velocity * r).sum().backward()
    torch.testing.assert_close(y.grad, sph.proju(x, r), **tol(dtype))

    xa = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0]], dtype=dtype, requires_grad=True)
    ya = (-xa.detach()).clone().requires_grad_(True)
    s = torch.tensor([0.5, 1.0, 0.25], dtype=dtype)
    point, velocity = sph.geodesic_between(xa, ya, s)
    torch.testing.assert_close(sph.norm(xa, velocity), torch.full((3,), math.pi, dtype=dtype), **tol(dtype))
    torch.testing.assert_close(sph.dist(xa, point), s * math.pi, **tol(dtype))
    torch.testing.assert_close(point[1], ya[1].detach(), **tol(dtype))
    sph.check_vector(point, velocity, "velocity", atol=1e-5 if dtype == torch.float32 else 1e-12)
    (point.sum() + velocity.sum()).backward()
    assert torch.isfinite(xa.grad).all() and torch.isfinite(ya.grad).all()

    x64 = sph.random_base(256, dtype=torch.float64, generator=gen)
    u = random_tangent(sph, x64, 1.0, gen)
    u = u / sph.norm(x64, u)[..., None] * (math.pi - 1e-3)
    x32, y32 = x64.float(), sph.expmap(x64, u).float()
    t = torch.rand(256, generator=gen)
    p32, v32 = sph.geodesic_between(x32, y32, t)
    p64, v64 = sph.geodesic_between(sph.projx(x32.double()), sph.projx(y32.double()), t.double())
    assert float((p32.double() - p64).norm(dim=-1).max()) < 5e-3
    assert float(((v32.double() - v64).norm(dim=-1) / v64.norm(dim=-1)).max()) < 5e-3
    sph.check_point(p32, "point")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sphere_projx_normalises_and_maps_zero_to_first_basis_vector(dtype):
    sph = Sphere(2)
    x = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]], [[0.0, -2.0, 0.0], [1e-30, 0.0, 0.0]]], dtype=dtype)
    expected = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.0, 0.8]], [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=dtype)
    torch.testing.assert_close(sph.projx(x), expected)
    torch.testing.assert_close(sph.projx(x[:, 1:]), expected[:, 1:])  # no zero rows: the fast branch


def test_off_manifold_error_recognises_float32_data_cast_to_float64():
    s2 = Sphere(2)
    x32 = s2.random_base(100, dtype=torch.float32, generator=torch.Generator().manual_seed(3))
    x64 = x32.double()
    err = float(s2.point_violation(x64).max())
    assert 1e-9 < err < 1e-6  # float32 rounding, far above float64's tolerance
    with pytest.raises(
        ValueError,
        match=r"x1: \d+ of 100 points off the manifold; point is off Sphere\(2\) by "
        r".*float64.*projx\(x1\).*float32 rounding",
    ):
        s2.check_point(x64, "x1")
    s2.check_point(s2.projx(x64), "x1")  # the fix the message gives works
    with pytest.raises(ValueError) as info:
        s2.check_point(x64 * 1.1, "x1")
    assert "float32 rounding" not in str(info.value)  # a real error is not blamed on rounding


@pytest.mark.parametrize("name", sorted(MANIFOLDS))
def test_point_violation_is_inf_for_non_finite_points_and_zero_on_the_manifold(name):
    m = MANIFOLDS[name]()
    x = m.random_base(4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = m.point_violation(x)
    assert v.shape == (4,) and float(v.max()) <= 1e-12
    bad = x.clone()
    bad.view(4, -1)[1, 0] = float("nan")
    bad.view(4, -1)[2, 0] = float("inf")
    v = m.point_violation(bad)
    assert torch.isinf(v[1]) and torch.isinf(v[2]) and float(v[0]) <= 1e-12 and float(v[3]) <= 1e-12


def test_sphere_log_near_the_antipode_is_tangent_in_float32():
    """A hypothesis draw (seed 21042) found a float32 log of nearly antipodal points 1.04e-4 off
    the tangent space: the rounding of the normal component, amplified by theta / sin(theta)."""
    s2 = Sphere(2)
    x = torch.tensor([0.3, -0.5, 0.8124038], dtype=torch.float32)
    x = x / x.norm()
    for eps in (1e-2, 3e-3, 1e-3):
        y = s2.projx(-x + eps * torch.tensor([0.6, 0.8, 0.0]))
        v = s2.logmap(x, y)
        s2.check_vector(x, v, "logmap(x, y)", atol=1e-5)
        torch.testing.assert_close(s2.expmap(x, v), y, rtol=1e-4, atol=1e-4)
