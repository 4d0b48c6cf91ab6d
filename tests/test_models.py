"""rfm.models: tangent outputs on every manifold, seam continuity on the torus, forward-mode
differentiability (the exact likelihood needs it), time broadcasting."""

import math

import pytest
import torch

from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere
from rfm.models import FourierEncoding, TimeEmbedding, encoding_for, velocity_mlp

MANIFOLDS = [Euclidean(3), Sphere(2), FlatTorus(2), SO3(), SE3(), Product(Sphere(2), SO3(), FlatTorus(1))]


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_velocity_is_tangent_with_batch_dims_and_time_forms(m):
    torch.manual_seed(0)
    v = velocity_mlp(m, hidden=32, depth=3).double()
    x = m.random_base(4, 5, dtype=torch.float64)
    for t in (
        0.3,
        torch.tensor(0.3, dtype=torch.float64),
        torch.full((4, 5), 0.3, dtype=torch.float64),
        torch.full((4,), 0.3, dtype=torch.float64),
    ):  # per-sample times: a prefix of the batch shape
        out = v(x, t)
        assert out.shape == x.shape
        m.check_vector(x, out, "velocity", atol=1e-12)
    torch.testing.assert_close(v(x, 0.3), v(x, torch.full((4, 5), 0.3, dtype=torch.float64)))
    assert not torch.allclose(v(x, 0.1), v(x, 0.9))  # time conditioning matters
    with pytest.raises(ValueError, match="must be a prefix of the batch shape"):
        v(x, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="trailing shape"):
        v(torch.zeros(4, 7, dtype=torch.float64), 0.3)


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_jvp_through_velocity_matches_finite_difference(m):
    torch.manual_seed(1)
    v = velocity_mlp(m, hidden=32, depth=2).double()
    x = m.random_base(6, dtype=torch.float64)
    d = m.proju(x, torch.randn(x.shape, dtype=torch.float64))
    t = torch.tensor(0.4, dtype=torch.float64)
    _, jv = torch.func.jvp(lambda z: v(z, t), (x,), (d,))
    eps = 1e-6
    fd = (v(m.expmap(x, eps * d), t) - v(m.expmap(x, -eps * d), t)) / (2 * eps)
    # exp and the ambient line agree to first order, so the directional derivatives match
    torch.testing.assert_close(jv, fd, atol=1e-5, rtol=1e-5)


def test_torus_encoding_is_continuous_across_the_seam():
    torch.manual_seed(2)
    m = FlatTorus(2)
    v = velocity_mlp(m, hidden=32, depth=2, torus_harmonics=3).double()
    a = torch.tensor([[1e-9, 1.0]], dtype=torch.float64)
    b = torch.tensor([[2 * math.pi - 1e-9, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(v(a, 0.5), v(b, 0.5), atol=1e-7, rtol=0)
    assert encoding_for(m, harmonics=3).out_features == 12


def test_time_embedding_values():
    emb = TimeEmbedding(2, max_frequency=10.0)
    t = torch.tensor([0.25])
    out = emb(t)
    expected = torch.tensor(
        [
            [
                0.25,
                math.sin(2 * math.pi * 0.25),
                math.sin(2 * math.pi * 10 * 0.25),
                math.cos(2 * math.pi * 0.25),
                math.cos(2 * math.pi * 10 * 0.25),
            ]
        ]
    )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_so3_outputs_are_lie_algebra_coordinates():
    m = SO3()
    v = velocity_mlp(m, hidden=16, depth=1).double()
    x = m.random_base(3, dtype=torch.float64)
    out = v(x, 0.5)
    w = m.to_lie(x, out)
    torch.testing.assert_close(out, m.from_lie(x, w))
    with pytest.raises(ValueError, match="representation"):
        encoding_for(m, rotation="quaternion")
    with pytest.raises(ValueError, match=r"unknown embedding option\(s\) harmonics for SO3\(\) \(it takes: rotation\)"):
        velocity_mlp(m, hidden=8, depth=1, torus_harmonics=3)


def test_fourier_encoding_values_and_sphere_velocity():
    enc = FourierEncoding(3, n_features=5, scale=4.0, seed=7)
    again = FourierEncoding(3, n_features=5, scale=4.0, seed=7)
    torch.testing.assert_close(enc.B, again.B)  # seeded: a rebuilt model has the same features
    assert enc.B.std().item() == pytest.approx(4.0, rel=0.6)
    x = Sphere(2).random_base(2, 3, dtype=torch.float64)
    out = enc(x)
    arg = torch.einsum("...i,ij->...j", x, enc.B)
    torch.testing.assert_close(out, torch.cat([x, arg.sin(), arg.cos()], -1))
    assert out.shape == (2, 3, enc.out_features) and enc.out_features == 13
    v = velocity_mlp(Sphere(2), hidden=16, depth=2, fourier_features=5).double()
    assert isinstance(v.encoding.outer, FourierEncoding)
    Sphere(2).check_vector(x, v(x, 0.5), "velocity", atol=1e-12)
    with pytest.raises(ValueError, match="n_features"):
        FourierEncoding(3, n_features=0)
    with pytest.raises(ValueError, match="scale"):
        FourierEncoding(3, scale=0.0)


def test_fourier_features_of_rotations_give_tangent_velocities():
    so3 = SO3()
    enc = encoding_for(so3, fourier_features=4, fourier_scale=2.0)
    r = so3.random_base(2, 3, dtype=torch.float64)
    flat = r.flatten(-2)
    arg = flat @ enc.outer.B
    torch.testing.assert_close(enc.double()(r), torch.cat([flat, arg.sin(), arg.cos()], -1))
    assert enc.out_features == 9 + 8
    v = velocity_mlp(so3, hidden=16, depth=2, fourier_features=4).double()
    out = v(r, torch.full((2, 3), 0.3, dtype=torch.float64))
    # tangent at R: R^T v is skew-symmetric
    skew = r.transpose(-1, -2) @ out
    torch.testing.assert_close(skew, -skew.transpose(-1, -2), atol=1e-12, rtol=0)
    assert out.abs().max() > 0


def test_class_conditional_velocity_labels_broadcast_through_likelihood_and_errors():
    from manifolds import FlatTorus
    from rfm import ODESolver
    from rfm.models import velocity_mlp

    torch.manual_seed(0)
    torus = FlatTorus(2)
    model = velocity_mlp(torus, hidden=32, depth=2, torus_harmonics=2, num_classes=3, label_dim=4).double()
    for p in model.parameters():  # a non-trivial field
        torch.nn.init.normal_(p, std=0.5)
    x = torus.random_base(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    t = torch.tensor(0.3, dtype=torch.float64)
    v = model(x, t, labels)
    # wiring: the label embedding is appended to the encoded point
    features = torch.cat([model.encoding(x), model.label_embedding.weight[labels]], dim=-1)
    torch.testing.assert_close(v, model.net(features, t))
    assert not torch.allclose(model(x, t, torch.zeros_like(labels)), v)
    # a mixed-label batch through the exact likelihood (whose divergence folds its replicas into
    # the batch, replica-major: entry j is sample j % B, so per-sample labels are tiled) equals
    # the likelihood of each label's points on their own
    mixed = ODESolver(torus, lambda z, s: model(z, s, labels.repeat(len(z) // len(labels)))).log_likelihood(x, steps=8)
    for c in range(3):
        sel = labels == c
        alone = ODESolver(torus, lambda z, s: model(z, s, torch.tensor(c))).log_likelihood(x[sel], steps=8)
        torch.testing.assert_close(mixed[sel], alone)
    with pytest.raises(ValueError, match="label is required"):
        model(x, t)
    with pytest.raises(ValueError, match=r"label values must be in \[0, 3\)"):
        model(x, t, torch.full((6,), 3))
    with pytest.raises(ValueError, match="integer class ids"):
        model(x, t, torch.zeros(6))
    with pytest.raises(ValueError, match="does not broadcast"):
        model(x, t, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        velocity_mlp(torus, hidden=8, depth=1)(x.float(), 0.5, labels)
    with pytest.raises(ValueError, match="num_classes"):
        velocity_mlp(torus, hidden=8, depth=1, num_classes=-1)


def test_fourier_encoding_keeps_full_precision_under_autocast():
    # bfloat16 keeps ~3 digits: at scale 32 the phase of a point would be off by ~0.1 rad
    enc = FourierEncoding(3, n_features=64, scale=32.0, seed=0)
    x = Sphere(2).random_base(256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, enc(x))


def _make_circle():
    """A manifold built in the test from the base class alone: the unit circle as an angle in
    [0, 2 pi), i.e. FlatTorus(1) written from scratch, with its own embedding."""
    from manifolds.base import RiemannianManifold
    from manifolds.torus import wrap_angle, wrap_difference

    class Circle(RiemannianManifold):
        point_shape, dim = (1,), 1

        def expmap(self, x, u):
            return wrap_angle(x + u)

        def logmap(self, x, y):
            return wrap_difference(y - x)

        def dist(self, x, y, *, keepdim=False):
            return self.logmap(x, y).abs().sum(-1, keepdim=keepdim)

        def inner(self, x, u, v=None, *, keepdim=False):
            return (u * (u if v is None else v)).sum(-1, keepdim=keepdim)

        def projx(self, x):
            return wrap_angle(x)

        def proju(self, x, u):
            return u

        def tangent_basis(self, x):
            return torch.ones(*x.shape[:-1], 1, 1, dtype=x.dtype, device=x.device)

        def random_base(self, *batch_shape, dtype=None, device=None, generator=None):
            return (
                2 * math.pi * torch.rand(*batch_shape, 1, dtype=self._dtype(dtype), device=device, generator=generator)
            )

        def base_logprob(self, x):
            return torch.full(x.shape[:-1], -math.log(2 * math.pi), dtype=x.dtype, device=x.device)

        def _distance_from_manifold(self, x):
            return ((-x).clamp_min(0) + (x - 2 * math.pi).clamp_min(0)).amax(-1)

        def _distance_from_tangent(self, x, u):
            return torch.zeros(u.shape[:-1], dtype=u.dtype, device=u.device)

        def embedding_size(self, **options):
            return 2

        def embed(self, x, **options):
            return torch.cat([torch.cos(x), torch.sin(x)], dim=-1)  # continuous across the seam

    return Circle()


def test_a_new_manifold_needs_no_edits_outside_its_file():
    # models, the path, the objective and the solvers work from the manifold's own hooks:
    # the same weights give the same velocities and likelihoods as the library's FlatTorus(1)
    from rfm import GeodesicPath, ODESolver, RFMObjective

    circle, torus = _make_circle(), FlatTorus(1)
    torch.manual_seed(0)
    v_circle = velocity_mlp(circle, hidden=16, depth=2).double()
    v_torus = velocity_mlp(torus, hidden=16, depth=2).double()
    v_torus.load_state_dict(v_circle.state_dict())
    x = circle.random_base(50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(v_circle(x, 0.3), v_torus(x, 0.3))
    ll_circle = ODESolver(circle, v_circle).log_likelihood(x, steps=8)
    ll_torus = ODESolver(torus, v_torus).log_likelihood(x, steps=8)
    torch.testing.assert_close(ll_circle, ll_torus)
    s = GeodesicPath(circle).sample(None, x, torch.rand(50, dtype=torch.float64))
    circle.check_point(s.x_t)
    loss = RFMObjective(circle)(v_circle, x, generator=torch.Generator().manual_seed(2))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in v_circle.parameters())
    with pytest.raises(ValueError, match=r"unknown embedding option\(s\) harmonics"):
        velocity_mlp(circle, hidden=8, depth=1, torus_harmonics=2)


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_manifold_raw_outputs_give_tangent_vectors_and_embeddings_have_their_size(m):
    x = m.random_base(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    raw = torch.randn(3, 2, m.raw_tangent_size, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    u = m.raw_to_tangent(x, raw)
    m.check_vector(x, u, "u", atol=1e-12)
    assert m.embed(x).shape == (3, 2, m.embedding_size())
    with pytest.raises(ValueError, match="raw must have trailing size"):
        m.raw_to_tangent(x, raw[..., :-1] if m.raw_tangent_size > 1 else torch.cat([raw, raw], -1))
    # the embedding separates points: two different points never share features
    y = m.random_base(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert bool(((m.embed(x) - m.embed(y)).abs().amax(-1) > 1e-6).all())


def test_so3_raw_outputs_are_body_angular_velocities():
    so3 = SO3()
    r = so3.random_base(4, dtype=torch.float64)
    w = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(so3.to_lie(r, so3.raw_to_tangent(r, w)), w)
    se3 = SE3()
    x = se3.random_base(4, dtype=torch.float64)
    raw = torch.randn(4, 6, dtype=torch.float64)
    u = se3.raw_to_tangent(x, raw)
    rot, _ = SE3.to_rt(x)
    torch.testing.assert_close(so3.to_lie(rot, u[..., :3, :3]), raw[..., :3])
    torch.testing.assert_close(u[..., :3, 3], raw[..., 3:])
