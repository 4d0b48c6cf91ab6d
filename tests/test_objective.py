"""The library's RFM training objective (rfm.RFMObjective) and training-time sampling
(gm.training_times)."""

import pytest
import torch
from scipy import stats

from gm import training_times
from rfm import RFMObjective


def _recorded_targets(manifold, point, batch, sigma, **options):
    """x1 and t as the objective hands them to its path, and the loss it returns."""
    objective = RFMObjective(manifold, data_noise=sigma, **options)
    seen, sample = [], objective.path.sample

    def recording(x0, x1, t):
        seen.append((x1, t))
        return sample(x0, x1, t)

    objective.path.sample = recording
    x1 = point.expand(batch, *point.shape[1:])
    loss = objective(lambda x, t: torch.zeros_like(x), x1, generator=torch.Generator().manual_seed(0))
    return (*seen[0], loss)


@pytest.mark.parametrize("sigma", [0.0, 0.1])
def test_torus_training_jitter_is_wrapped_gaussian_with_the_configured_std(sigma):
    from manifolds import FlatTorus
    from manifolds.torus import wrap_difference

    point = torch.tensor([[0.02, 6.25]])  # next to the seam, so jitter must wrap
    x1, _, loss = _recorded_targets(FlatTorus(2), point, 20000, sigma)
    assert torch.isfinite(loss)
    assert bool(((x1 >= 0) & (x1 < 2 * torch.pi)).all())
    d = wrap_difference(x1 - point)
    if sigma == 0:
        assert torch.equal(x1, point.expand_as(x1))
    else:
        assert abs(float(d.mean())) < 4 * sigma / 20000**0.5 * 2
        assert float(d.std()) == pytest.approx(sigma, rel=0.03)


def test_sphere_training_jitter_is_tangent_gaussian():
    # a tangent N(0, s^2 I_2) pushed through exp: geodesic distance d with d^2 / s^2 ~ chi^2_2
    # for small s, and the points stay on the sphere
    from manifolds import Sphere

    sphere, sigma = Sphere(2), 0.05
    point = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)
    x1, _, loss = _recorded_targets(sphere, point, 20000, sigma)
    assert torch.isfinite(loss)
    torch.testing.assert_close(x1.norm(dim=-1), torch.ones(20000, dtype=torch.float64))
    d = sphere.dist(point, x1)
    assert stats.kstest((d / sigma) ** 2, stats.chi2(2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_objective_draws_times_with_density_a_t_to_the_a_minus_1(power):
    from manifolds import FlatTorus

    _, t, _ = _recorded_targets(FlatTorus(2), torch.tensor([[1.0, 2.0]]), 5000, 0.0, time_power=power)
    t = t.numpy()
    assert stats.kstest(t, stats.beta(power, 1.0).cdf).pvalue > 1e-3
    assert stats.kstest(t, stats.beta(3.0 - power, 1.0).cdf).pvalue < 1e-6  # the test can tell them apart


def test_stratified_training_times_have_one_draw_per_stratum_and_are_uniform():
    gen = torch.Generator().manual_seed(0)
    t = training_times(64, stratified=True, generator=gen, dtype=torch.float64)
    assert sorted((t * 64).floor().long().tolist()) == list(range(64))
    draws = torch.cat([training_times(64, stratified=True, generator=gen) for _ in range(100)])
    assert stats.kstest(draws.numpy(), stats.uniform.cdf).pvalue > 1e-3
    t2 = training_times(5000, power=3.0, stratified=True, generator=gen).numpy()
    assert stats.kstest(t2, stats.beta(3.0, 1.0).cdf).pvalue > 1e-3


def test_training_times_reject_bad_arguments():
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        training_times(0)
    with pytest.raises(ValueError, match="power must be a finite number > 0"):
        training_times(4, power=float("nan"))
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        training_times(4, dtype=torch.long)


def test_objective_in_bfloat16_autocast_matches_float32():
    from manifolds import Sphere
    from rfm.models import velocity_mlp

    sphere = Sphere(2)
    torch.manual_seed(0)
    model = velocity_mlp(sphere, hidden=64, depth=2, fourier_features=16, fourier_scale=8.0)
    data = sphere.random_base(256, generator=torch.Generator().manual_seed(1))
    losses, grads = [], []
    for dtype in (None, torch.bfloat16):
        loss = RFMObjective(sphere, autocast_dtype=dtype)(model, data, generator=torch.Generator().manual_seed(2))
        model.zero_grad()
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert losses[1].dtype == torch.float32
    assert float(losses[1]) == pytest.approx(float(losses[0]), rel=2e-2)
    assert torch.isfinite(grads[1]).all()
    assert float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)) > 0.98


def test_objective_gives_one_time_per_sample_for_frames_of_many_residues():
    # SE(3)^N as a batch of N frames per protein: t has shape (B,), shared by the N residues
    from manifolds import SE3

    se3, seen = SE3(), []
    objective = RFMObjective(se3)
    x1 = se3.random_base(3, 5, generator=torch.Generator().manual_seed(0))

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    loss = objective(model, x1, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and seen[0].shape == (3,)


def test_objective_rejects_bad_inputs():
    from manifolds import Sphere

    sphere = Sphere(2)
    objective = RFMObjective(sphere)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="x1 must be a floating-point tensor"):
        objective(model, torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty batch"):
        objective(model, torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"x1: .*off the manifold"):
        objective(model, 1.1 * sphere.random_base(4))
    with pytest.raises(ValueError, match=r"model must return velocities of shape \(4, 3\)"):
        objective(lambda x, t: x[:, :2], sphere.random_base(4))
    with pytest.raises(ValueError, match="autocast_dtype"):
        RFMObjective(sphere, autocast_dtype=torch.float64)
