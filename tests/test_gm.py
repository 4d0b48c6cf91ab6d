"""Tests for gm: schedulers against finite differences and closed forms, the simulate loop
against exact solutions of linear ODEs, and the joint process."""

import math

import pytest
import torch

import gm
from gm import (
    CosineConvexScheduler,
    ExponentialRateScheduler,
    JointProcess,
    LinearScheduler,
    PolynomialScheduler,
    Process,
    simulate,
)

SCHEDULERS = [
    LinearScheduler(),
    PolynomialScheduler(2),
    PolynomialScheduler(0.5),
    CosineConvexScheduler(),
    ExponentialRateScheduler(3.0),
]


@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
def test_scheduler_derivative_matches_finite_difference(sched):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    eps = 1e-6
    fd = (sched.kappa(t + eps) - sched.kappa(t - eps)) / (2 * eps)
    torch.testing.assert_close(sched.d_kappa(t), fd, rtol=1e-7, atol=1e-8)
    out = sched(t)
    assert torch.equal(out.kappa, sched.kappa(t)) and torch.equal(out.d_kappa, sched.d_kappa(t))


@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
def test_scheduler_inverse_and_rate(sched):
    t = torch.linspace(0.0, 0.97, 30, dtype=torch.float64)
    torch.testing.assert_close(sched.inverse(sched.kappa(t)), t, rtol=1e-9, atol=1e-9)
    ts = t[1:]
    torch.testing.assert_close(sched.rate(ts), sched.d_kappa(ts) / (1 - sched.kappa(ts)), rtol=1e-9, atol=0)
    assert float(sched.kappa(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    assert bool((sched.kappa(t).diff() > 0).all())


def test_scheduler_closed_forms():
    t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    torch.testing.assert_close(PolynomialScheduler(3).kappa(t), t**3)
    torch.testing.assert_close(CosineConvexScheduler().kappa(t), 1 - torch.cos(math.pi * t / 2))
    torch.testing.assert_close(ExponentialRateScheduler(2.0).kappa(t), 1 - torch.exp(-2 * t))
    assert torch.equal(ExponentialRateScheduler(2.0).rate(t), torch.full_like(t, 2.0))
    assert LinearScheduler().rate(torch.tensor(1.0)).isinf()
    # float32 rate close to t = 1 keeps relative precision
    t32 = torch.tensor(1 - 2**-20, dtype=torch.float32)
    torch.testing.assert_close(
        PolynomialScheduler(2).rate(t32), (2 * t32.double() / (1 - t32.double() ** 2)).float(), rtol=1e-4, atol=0
    )


def test_scheduler_bad_arguments():
    with pytest.raises(ValueError, match="n must be"):
        PolynomialScheduler(0)
    with pytest.raises(ValueError, match="rate must be"):
        ExponentialRateScheduler(-1.0)
    with pytest.raises(ValueError, match="t must be a floating"):
        LinearScheduler()(torch.tensor([1, 2]))


class LinearFlow(Process):
    """dx/dt = A x, Euler step."""

    def step(self, x, t, h, model_output):
        return x + h * model_output


def test_simulate_euler_converges_to_exponential():
    a = -1.3
    x0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    model = lambda x, t: a * x  # noqa: E731
    x1 = simulate(LinearFlow(), model, x0, steps=2000)
    torch.testing.assert_close(x1, x0 * math.exp(a), rtol=1e-3, atol=0)
    # Euler with n steps is exactly (1 + a/n)^n
    x1_10 = simulate(LinearFlow(), model, x0, steps=10)
    torch.testing.assert_close(x1_10, x0 * (1 + a / 10) ** 10)


def test_simulate_backwards_and_partial_grids_and_intermediates():
    model = lambda x, t: torch.ones_like(x)  # noqa: E731  dx/dt = 1
    x = torch.zeros(3)
    out = simulate(LinearFlow(), model, x, time_grid=[0.8, 0.5, 0.2], return_intermediates=True)
    assert out.shape == (3, 3)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, -0.3, -0.6]))
    out = simulate(LinearFlow(), model, x, time_grid=(0.25, 1.0), steps=3)
    torch.testing.assert_close(out, torch.full((3,), 0.75))


def test_simulate_time_is_tensor_on_state_dtype_and_no_grad_default():
    seen = []

    def model(x, t):
        seen.append((t.dtype, t.dim()))
        return x

    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    y = simulate(LinearFlow(), model, x, steps=2)
    assert not y.requires_grad
    assert seen == [(torch.float64, 0)] * 2
    y = simulate(LinearFlow(), model, x, steps=2, enable_grad=True)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((2,), 1.5**2, dtype=torch.float64))


@pytest.mark.parametrize(
    "grid,steps,match",
    [
        ((0.0,), None, "at least 2"),
        ((0.0, 1.5), None, r"in \[0, 1\]"),
        ((0.0, 0.5, 0.2), None, "strictly"),
        ((0.0, 0.5, 1.0), 4, "needs time_grid"),
        ((0.0, 1.0), 0, "positive integer"),
        ((0.0, float("nan")), None, "finite"),
    ],
)
def test_time_grid_errors(grid, steps, match):
    with pytest.raises(ValueError, match=match):
        gm.make_time_grid(grid, steps)


class CountingJump(Process):
    """Integer counter that increments by the model output each step."""

    def step(self, x, t, h, model_output):
        return x + model_output


def test_joint_process_steps_components_with_one_model_call():
    calls = []

    def model(state, t):
        assert isinstance(t, tuple) and len(t) == 2 and float(t[0]) == float(t[1])  # each component's time
        calls.append(float(t[0]))
        flow_x, counts = state
        return (-flow_x, torch.ones_like(counts))

    x0 = (torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    traj = simulate(JointProcess([LinearFlow(), CountingJump()]), model, x0, steps=5, return_intermediates=True)
    assert len(calls) == 5
    assert traj[0].shape == (6, 4) and traj[1].dtype == torch.long
    torch.testing.assert_close(traj[0][-1], torch.full((4,), 0.8**5, dtype=torch.float64))
    assert torch.equal(traj[1][-1], torch.full((4,), 5))
    with pytest.raises(ValueError, match="model_output must be a tuple of 2"):
        simulate(JointProcess([LinearFlow(), CountingJump()]), lambda s, t: s[0], x0, steps=1)


def test_data_end_time_grid_values_and_errors():
    g = gm.data_end_time_grid(4, 2.0)
    torch.testing.assert_close(g, torch.tensor([0, 0.4375, 0.75, 0.9375, 1], dtype=torch.float64))
    torch.testing.assert_close(gm.data_end_time_grid(4, 2.0, backward=True), g.flip(0))
    torch.testing.assert_close(gm.data_end_time_grid(3, 1.0), torch.linspace(0, 1, 4, dtype=torch.float64))
    assert bool((gm.data_end_time_grid(100, 3.0).diff() > 0).all())
    with pytest.raises(ValueError, match="steps"):
        gm.data_end_time_grid(0)
    with pytest.raises(ValueError, match="power"):
        gm.data_end_time_grid(4, 0.5)
