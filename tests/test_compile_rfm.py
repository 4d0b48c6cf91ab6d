"""torch.compile of the rfm family (issue #25): the velocity networks, the geodesic path, the
training objective (validate=False) and one ODE step compile with fullgraph=True and zero graph
breaks on every manifold, and compiled runs equal eager ones."""

from __future__ import annotations

import pytest
import torch
from conftest import graph_breaks

from manifolds import SE3, SO3, Euclidean, FlatTorus, Product, Sphere
from rfm import GeodesicPath, ManifoldFlowProcess, ODESolver, RFMObjective
from rfm.models import velocity_mlp

MANIFOLDS = [Sphere(2), SO3(), FlatTorus(2), SE3(), Euclidean(3), Product(Sphere(2), FlatTorus(1))]


def _setup(manifold, dtype=torch.float32):
    torch.manual_seed(0)
    model = velocity_mlp(manifold, hidden=32, depth=2).to(dtype)
    g = torch.Generator().manual_seed(1)
    x0 = manifold.random_base(8, generator=g, dtype=dtype)
    x1 = manifold.random_base(8, generator=g, dtype=dtype)
    return model, x0, x1, torch.rand(8, generator=g, dtype=dtype)


@pytest.mark.parametrize("manifold", MANIFOLDS, ids=repr)
def test_rfm_building_blocks_have_no_graph_breaks(manifold):
    model, x0, x1, t = _setup(manifold)
    assert graph_breaks(model, x1, t) == []
    assert graph_breaks(GeodesicPath(manifold, validate=False).sample, x0, x1, t) == []
    objective = RFMObjective(manifold, validate=False)
    assert graph_breaks(lambda m, x: objective(m, x, generator=None), model, x1) == []
    for method, stepping in (("euler", "project"), ("rk4", "project"), ("midpoint", "exp")):
        step = ManifoldFlowProcess(manifold, method, stepping).advance
        assert graph_breaks(step, x0, torch.tensor(0.3), torch.tensor(0.1), model) == [], (method, stepping)


@pytest.mark.parametrize("manifold", [Sphere(2), SO3()], ids=repr)  # SE(3): SO(3) x R^3, covered
def test_compiled_rfm_equals_eager_in_float64(manifold):
    model, x0, x1, t = _setup(manifold, torch.float64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x1, t), model(x1, t), rtol=1e-12, atol=1e-12)
    # the training objective and its gradients (SO(3)'s projection keeps its custom backward)
    objective = RFMObjective(manifold, validate=False)
    losses, grads = [], []
    for m in (model, compiled):
        loss = objective(m, x1, generator=torch.Generator().manual_seed(3))
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # one rk4 step
    step = ManifoldFlowProcess(manifold, "rk4").advance
    args = (x0, torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64), model)
    torch.testing.assert_close(
        torch.compile(step, fullgraph=True, backend="aot_eager")(*args), step(*args), rtol=1e-12, atol=1e-12
    )


def test_inductor_compiled_sampling_equals_eager():
    """The default backend (inductor, C++ on the CPU) on one small solve, float32."""
    model, x0, _, _ = _setup(Sphere(2))
    eager = ODESolver(Sphere(2), model).sample(x0, steps=4, method="midpoint")
    compiled = ODESolver(Sphere(2), model).sample(x0, steps=4, method="midpoint", compile=True)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


# Not traced for coverage (pytest-cov): compiling runs torch's Python compiler stack, which the
# tracer slows down several times, and subprocess runs are not measured anyway; the eager code
# these tests exercise is covered by the other tests.
pytestmark = pytest.mark.no_cover
