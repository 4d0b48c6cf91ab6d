"""The most common user model, ``nn.Sequential`` over ``torch.cat([x, t.expand(B, 1)], -1)``,
which only accepts ``(B, D)`` points and a 0-dim time, works with every solver method and with
the exact and the Hutchinson likelihood (the divergence folds its replicas into the batch)."""

import math

import pytest
import torch
from torch import nn

from manifolds import Euclidean, FlatTorus, Sphere
from rfm import ODESolver


class PlainModel(nn.Module):
    """A ``(B, D)`` velocity: fails on any other batch rank, and on per-sample times."""

    def __init__(self, dim: int, hidden: int = 32, linear: bool = False) -> None:
        super().__init__()
        layers = (
            [nn.Linear(dim + 1, dim)] if linear else [nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim)]
        )
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2 and t.dim() == 0, (x.shape, t.shape)
        return self.net(torch.cat([x, t.expand(x.shape[0], 1)], -1))


class AnyBatchModel(nn.Module):
    """The same function for any leading batch dims (the reference)."""

    def __init__(self, plain: PlainModel) -> None:
        super().__init__()
        self.plain = plain

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return self.plain.net(torch.cat([flat, t.expand(flat.shape[0], 1)], -1)).reshape(x.shape)


MANIFOLDS = [(Euclidean(3), 3), (Sphere(2), 3), (FlatTorus(2), 2)]


@pytest.mark.parametrize("manifold, dim", MANIFOLDS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_plain_model_samples_and_likelihoods_match_a_batch_agnostic_model(manifold, dim, method):
    torch.manual_seed(0)
    plain = PlainModel(dim).double()
    reference = AnyBatchModel(plain)
    x0 = manifold.projx(torch.randn(6, dim, dtype=torch.float64))
    got = ODESolver(manifold, plain).sample(x0, steps=10, method=method)
    want = ODESolver(manifold, reference).sample(x0, steps=10, method=method)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    ll = ODESolver(manifold, plain).log_likelihood(got, steps=10, method=method)
    ll_ref = ODESolver(manifold, reference).log_likelihood(got, steps=10, method=method)
    assert ll.shape == (6,) and torch.isfinite(ll).all()
    torch.testing.assert_close(ll, ll_ref, rtol=0, atol=1e-10)
    probes = ODESolver(manifold, plain).log_likelihood(
        got, steps=10, method=method, divergence="hutchinson", n_probes=3, generator=torch.Generator().manual_seed(0)
    )
    assert probes.shape == (6,) and torch.isfinite(probes).all()


def test_plain_linear_model_likelihood_against_the_closed_form():
    # v(x, t) = A x + c t + b on R^3: div v = tr(A) everywhere, so
    # log p_1(x_1) = log N(x_0; 0, I) - tr(A), with x_0 the backward solve from x_1.
    torch.manual_seed(1)
    plain = PlainModel(3, linear=True).double()
    trace = float(plain.net[0].weight.detach()[:, :3].diagonal().sum())
    solver = ODESolver(Euclidean(3), plain)
    x1 = torch.randn(5, 3, dtype=torch.float64)
    x0 = solver.sample(x1, time_grid=torch.tensor([1.0, 0.0], dtype=torch.float64), steps=200, method="rk4")
    log_normal = -0.5 * (x0**2).sum(-1) - 1.5 * math.log(2 * math.pi)
    ll = solver.log_likelihood(x1, steps=200, method="rk4")
    torch.testing.assert_close(ll, log_normal - trace, rtol=0, atol=1e-8)
