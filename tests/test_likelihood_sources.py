"""The source density of exact likelihoods (issue #28): ODESolver.log_likelihood adds the
log-density of the source the flow starts from (a path's source, or log_p0), never a silent
N(0, I) where the path starts elsewhere."""

from __future__ import annotations

import math

import pytest
import torch

from gm import CosineScheduler, LinearScheduler, LinearVPScheduler, VEScheduler, VPScheduler
from manifolds import Euclidean, Sphere
from rfm import AffinePath, GaussianMixture, GeodesicPath, ODESolver, marginal_fields

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
VARIANCE = 0.3


def gaussian() -> GaussianMixture:
    return GaussianMixture(MEAN[None], VARIANCE * torch.eye(2, dtype=torch.float64)[None])


def exact_velocity(scheduler):
    target = gaussian()
    return lambda x, t: marginal_fields(target, scheduler, x, t).velocity


def log_normal(x: torch.Tensor, mean: torch.Tensor, variance: float | torch.Tensor) -> torch.Tensor:
    """log N(x; mean, variance I) in 2-D, written out (the oracle)."""
    return -0.5 * ((x - mean) ** 2).sum(-1) / variance - torch.log(
        2 * math.pi * torch.as_tensor(variance, dtype=x.dtype)
    )


@pytest.mark.parametrize(
    "scheduler, end",
    [
        (VEScheduler(0.01, 5.0), 1.0),
        (VPScheduler(), 1.0 - 1e-4),
        (LinearVPScheduler(), 1.0 - 1e-4),
        (CosineScheduler(), 1.0),
    ],
    ids=repr,
)
def test_the_exact_field_from_the_exact_t0_marginal_gives_the_exact_density(scheduler, end):
    """Exact Gaussian marginal field started from the path's exact t = 0 marginal: the
    likelihood at t = end is log N(x; alpha m, (alpha^2 v + sigma^2) I) (sigma_min^2 at t = 1
    for VE). VP fields are evaluated from 1 - 1e-4 (sigma' is infinite at t = 1 itself)."""
    g = torch.Generator().manual_seed(0)
    x = MEAN + torch.randn(6, 2, dtype=torch.float64, generator=g) * 1.5
    x[0] = MEAN  # the mode
    zero, s = scheduler(torch.tensor(0.0, dtype=torch.float64)), scheduler(torch.tensor(end, dtype=torch.float64))
    log_p0 = lambda x0: log_normal(x0, zero.alpha * MEAN, zero.alpha**2 * VARIANCE + zero.sigma**2)  # noqa: E731
    solver = ODESolver(Euclidean(2), exact_velocity(scheduler), path=AffinePath(scheduler))
    got = solver.log_likelihood(x, steps=128, time_grid=(end, 0.0), log_p0=log_p0)
    want = log_normal(x, s.alpha * MEAN, s.alpha**2 * VARIANCE + s.sigma**2)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)
    if isinstance(scheduler, VEScheduler):
        torch.testing.assert_close(want, log_normal(x, MEAN, VARIANCE + 0.01**2))


def test_ve_likelihood_defaults_to_the_paths_source_not_the_standard_normal():
    """The issue's case: VE(0.01, 5), exact field. The old default added log N(x0; 0, I); a solver
    given the path adds log N(x0; 0, 25 I), the source VE samples start from; the exact
    log-density (the flow from its exact t = 0 marginal) is different again, and log_p0 gets it."""
    ve = VEScheduler(0.01, 5.0)
    path = AffinePath(ve)
    x = torch.tensor([[1.0, -0.5], [1.4, 0.2], [-1.5, 1.0]], dtype=torch.float64)
    with_path = ODESolver(Euclidean(2), exact_velocity(ve), path=path)
    ll, x0 = with_path.log_likelihood(x, steps=64, return_source=True)
    torch.testing.assert_close(
        ll - with_path.log_likelihood(x, steps=64, log_p0=lambda z: torch.zeros(len(z), dtype=z.dtype)),
        log_normal(x0, torch.zeros(2, dtype=torch.float64), 25.0),
    )
    without = ODESolver(Euclidean(2), exact_velocity(ve)).log_likelihood(x, steps=64)
    torch.testing.assert_close(
        without - ll,
        log_normal(x0, torch.zeros(2, dtype=torch.float64), 1.0)
        - log_normal(x0, torch.zeros(2, dtype=torch.float64), 25.0),
    )
    assert (without - ll).abs().min() > 0.5  # the two sources differ by nats here
    exact = with_path.log_likelihood(x, steps=64, log_p0=lambda z: log_normal(z, MEAN, VARIANCE + 25.0))
    torch.testing.assert_close(exact, log_normal(x, MEAN, VARIANCE + 1e-4), rtol=1e-5, atol=1e-5)


def test_affine_source_log_prob_is_the_density_sample_source_draws_from():
    for scheduler, std in ((LinearScheduler(), 1.0), (VPScheduler(), 1.0), (VEScheduler(0.01, 3.0), 3.0)):
        path = AffinePath(scheduler)
        x = torch.randn(5, 3, dtype=torch.float64)
        want = torch.distributions.Normal(0.0, std).log_prob(x).sum(-1)
        torch.testing.assert_close(path.source_log_prob(x), want)
        draws = path.sample_source((20000, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert abs(float(draws.std()) - std) < 0.03 * std
    sphere = Sphere(2)
    points = sphere.random_base(4, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(GeodesicPath(sphere).source_log_prob(points), sphere.base_logprob(points))


def test_solver_path_and_log_p0_errors():
    field = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="path must be an rfm path with a source density"):
        ODESolver(Euclidean(2), field, path="ve")
    with pytest.raises(ValueError, match=r"path lives on Sphere\(2\) but the solver's manifold is Euclidean\(3\)"):
        ODESolver(Euclidean(3), field, path=GeodesicPath(Sphere(2)))
    with pytest.raises(ValueError, match="is a Euclidean path, but the solver's manifold is Sphere"):
        ODESolver(Sphere(2), field, path=AffinePath())
    solver = ODESolver(Euclidean(2), field, path=AffinePath(VEScheduler(0.01, 5.0)))
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="log_p0 must be callable"):
        solver.log_likelihood(x, steps=2, log_p0=3.0)
    with pytest.raises(ValueError, match=r"log_p0\(x0\) must return a floating-point tensor of the batch shape \(3,\)"):
        solver.log_likelihood(x, steps=2, log_p0=lambda z: z)
    # the same manifold built twice is the same manifold
    ODESolver(Sphere(2), field, path=GeodesicPath(Sphere(2)))
