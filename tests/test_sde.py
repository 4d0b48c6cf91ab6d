"""The SDE sampler of affine Gaussian paths: with the exact velocity of a Gaussian target, every
diffusion g gives samples whose mean and covariance at t = 1 (and at t = 1/2) are the path's
marginals, within Monte-Carlo and Euler-Maruyama error."""

import pytest
import torch

from gm import CosineScheduler, LinearScheduler, VPScheduler
from rfm import AffinePath, GaussianMixture, SDESolver, marginal_fields

MEAN = torch.tensor([1.5, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.30, 0.12], [0.12, 0.20]], dtype=torch.float64)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centred = x - x.mean(0)
    return x.mean(0), centred.T @ centred / (len(x) - 1)


@pytest.mark.parametrize("scheduler", [LinearScheduler(), CosineScheduler(), VPScheduler()], ids=repr)
@pytest.mark.parametrize("g_name", ["ode", "linear", "sigma"])
def test_sde_samples_have_the_path_marginals(scheduler, g_name):
    target = GaussianMixture(MEAN[None], COV[None])
    path = AffinePath(scheduler)
    diffusion = {
        "ode": lambda t: 0.0,
        "linear": lambda t: 0.8 * (1 - t),
        "sigma": lambda t: scheduler.sigma(t, validate=False),
    }[g_name]
    solver = SDESolver(path, lambda x, t: marginal_fields(target, scheduler, x, t).velocity)
    g = torch.Generator().manual_seed(0)
    n = 4000
    x0 = path.sample_source((n, 2), generator=g, dtype=torch.float64)
    states = solver.sample(
        x0,
        diffusion,
        steps=None,
        generator=g,
        return_intermediates=True,
        time_grid=torch.linspace(0, 1, 201, dtype=torch.float64),
    )
    for t, x in ((0.5, states[100]), (1.0, states[200])):
        alpha, sigma = float(scheduler.alpha(torch.tensor(t))), float(scheduler.sigma(torch.tensor(t)))
        mean, cov = alpha * MEAN, alpha**2 * COV + sigma**2 * torch.eye(2, dtype=torch.float64)
        got_mean, got_cov = moments(x)
        mc = (cov.diagonal() / n).sqrt()
        assert ((got_mean - mean).abs() < 5 * mc + 0.01).all(), (t, got_mean, mean)
        # covariance entries: MC std ~ sqrt(2/n) * var; plus the Euler-Maruyama bias
        assert ((got_cov - cov).abs() < 5 * (2 / n) ** 0.5 * cov.diagonal().max() + 0.01).all(), (t, got_cov, cov)


def test_sde_noise_is_reproducible_and_matters():
    scheduler = CosineScheduler()
    target = GaussianMixture(MEAN[None], COV[None])
    path = AffinePath(scheduler)
    solver = SDESolver(path, lambda x, t: marginal_fields(target, scheduler, x, t).velocity)
    x0 = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = solver.sample(x0, lambda t: 0.5, steps=20, generator=torch.Generator().manual_seed(2))
    b = solver.sample(x0, lambda t: 0.5, steps=20, generator=torch.Generator().manual_seed(2))
    c = solver.sample(x0, lambda t: 0.5, steps=20, generator=torch.Generator().manual_seed(3))
    ode = solver.sample(x0, lambda t: 0.0, steps=20)
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, ode)


def test_sde_errors():
    path = AffinePath(CosineScheduler())
    solver = SDESolver(path, lambda x, t: torch.zeros_like(x))
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="diffusion\\(t\\) must be finite and >= 0"):
        solver.sample(x0, lambda t: -1.0, steps=2)
    with pytest.raises(ValueError, match="time_grid must be increasing"):
        solver.sample(x0, lambda t: 1.0, time_grid=(1.0, 0.0), steps=2)
    with pytest.raises(ValueError, match="path must be an rfm.AffinePath"):
        SDESolver("path", lambda x, t: x)
    with pytest.raises(ValueError, match="velocity must be a tensor of the points' shape"):
        SDESolver(path, lambda x, t: x[:, :1]).sample(x0, lambda t: 1.0, steps=2)
