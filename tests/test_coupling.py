"""Couplings: the exact minibatch OT plan is the optimal permutation (brute force on small
batches) for the squared geodesic distance of every manifold; Sinkhorn's plan has uniform
marginals; coupled pairs cost less than independent ones; and on Gaussian -> shifted Gaussian
a flow trained with OT pairs is straighter and needs fewer Euler steps."""

import itertools

import pytest
import torch
from torch import nn

from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere
from rfm import GeodesicPath, IndependentCoupling, ODESolver, OTCoupling, PairedCoupling, rfm_loss
from rfm.coupling import pairwise_squared_distances

MANIFOLDS = [Euclidean(2), Sphere(2), FlatTorus(2), SO3(), SE3(), Product(Sphere(2), FlatTorus(1))]


def draws(m, n, seed):
    return m.random_base(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=lambda m: type(m).__name__)
def test_exact_plan_is_the_optimal_permutation(manifold):
    x0, x1 = draws(manifold, 6, 0), draws(manifold, 6, 1)
    cost = pairwise_squared_distances(manifold, x0, x1)
    torch.testing.assert_close(cost[2, 4], manifold.dist(x0[2], x1[4]) ** 2)
    plan = OTCoupling(manifold).plan(x0, x1)
    assert torch.equal((plan > 0).sum(0), torch.ones(6, dtype=torch.long))
    assert torch.equal((plan > 0).sum(1), torch.ones(6, dtype=torch.long))
    best = min(sum(float(cost[i, p[i]]) for i in range(6)) for p in itertools.permutations(range(6)))
    a, b = OTCoupling(manifold)(x0, x1)
    assert torch.equal(a, x0)
    coupled = float((manifold.dist(a, b) ** 2).sum())
    assert coupled == pytest.approx(best, rel=1e-9)
    assert coupled <= float(cost.diagonal().sum()) + 1e-12  # at most the independent pairing's cost
    assert sorted(map(tuple, b.flatten(1).tolist())) == sorted(map(tuple, x1.flatten(1).tolist()))


@pytest.mark.parametrize("manifold", [Euclidean(2), Sphere(2), SO3()], ids=lambda m: type(m).__name__)
def test_sinkhorn_plan_marginals_and_cost(manifold):
    x0, x1 = draws(manifold, 64, 2), draws(manifold, 64, 3)
    coupling = OTCoupling(manifold, method="sinkhorn", reg=0.05)
    plan = coupling.plan(x0, x1)
    torch.testing.assert_close(plan.sum(0), torch.full((64,), 1 / 64, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.sum(1), torch.full((64,), 1 / 64, dtype=torch.float64), rtol=0, atol=1e-6)
    cost = pairwise_squared_distances(manifold, x0, x1)
    independent = float(cost.mean())
    exact = float((OTCoupling(manifold).plan(x0, x1) * cost).sum())
    entropic = float((plan * cost).sum())
    assert exact <= entropic < independent
    a, b = coupling(x0, x1, generator=torch.Generator().manual_seed(0))
    assert float((manifold.dist(a, b) ** 2).mean()) < independent


def test_coupling_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="x0 and x1 must have the same shape"):
        OTCoupling(Euclidean(2))(x, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="method must be"):
        OTCoupling(Euclidean(2), method="hungarian")
    with pytest.raises(ValueError, match="reg must be a positive number"):
        OTCoupling(Euclidean(2), method="sinkhorn", reg=0.0)
    with pytest.raises(ValueError, match="non-finite distances"):
        OTCoupling(Euclidean(2))(x, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="x1 must be a floating-point tensor"):
        PairedCoupling()(x, torch.zeros(4, 2, dtype=torch.long))
    a, b = IndependentCoupling()(x, x + 1)
    assert torch.equal(b, x + 1)


def _train(coupling, steps=600, seed=0):
    torch.manual_seed(seed)
    m = Euclidean(2)
    net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))

    def velocity(x, t):
        return net(torch.cat([x, t.expand(x.shape[0], 1) if t.dim() == 0 else t[:, None]], -1))

    path, opt = GeodesicPath(m), torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([4.0, 0.0])
    for _ in range(steps):
        x0 = torch.randn(256, 2, generator=g)
        x1 = torch.randn(256, 2, generator=g) + shift
        x0, x1 = coupling(x0, x1, generator=g)
        s = path.sample(x0, x1, torch.rand(256, generator=g))
        loss = rfm_loss(m, velocity(s.x_t, s.t), s)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return velocity


def test_ot_coupling_trains_a_straighter_flow():
    m = Euclidean(2)
    flows = {"independent": _train(IndependentCoupling()), "ot": _train(OTCoupling(m))}
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(9))
    report = {}
    for name, velocity in flows.items():
        with torch.no_grad():
            path = ODESolver(m, velocity).sample(
                x0, steps=None, method="rk4", return_intermediates=True, time_grid=torch.linspace(0, 1, 65)
            )
            speeds = torch.stack([velocity(path[k], torch.tensor(k / 64)) for k in range(65)])
            kinetic = float((speeds**2).sum(-1).mean())  # E int |v|^2 dt on the grid
            reference = path[-1]
            one_step = ODESolver(m, velocity).sample(x0, steps=1, method="euler")
        report[name] = (kinetic, float((one_step - reference).norm(dim=-1).mean()))
    # W2^2 between N(0, I) and N((4, 0), I) is 16: the OT flow's kinetic energy is near it
    assert report["ot"][0] < report["independent"][0]
    assert report["ot"][0] == pytest.approx(16.0, rel=0.1)
    # one Euler step lands much closer to the converged sample with the straighter flow
    assert report["ot"][1] < 0.5 * report["independent"][1], report
