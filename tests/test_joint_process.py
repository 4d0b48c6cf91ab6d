"""gm.JointProcess on a factorised case with exact model outputs: a Gaussian flow on R (exact
marginal velocity of the CondOT path) beside a mask CTMC over tokens (exact posterior of a
product of categoricals). Each component's final marginal is checked against its target (moments
/ chi-square), fixed components against their given values, and the model calls and the times
it sees against the clock. Plus the mask CTMC's temperature and confidence (purity) unmasking."""

import math

import pytest
import torch
from scipy import stats

from dfm import CTMCSolver, MixtureJumpProcess, MixturePath
from gm import JointProcess, Process, simulate
from manifolds import Euclidean
from rfm.solver import ManifoldFlowProcess

MU, SIGMA = 2.0, 0.5  # flow target N(MU, SIGMA^2) from N(0, 1)
V, L = 4, 3  # tokens: vocabulary and positions
N = 4000  # samples
Q = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)


def gaussian_velocity(x, t):
    """Exact marginal velocity of x_t = t x1 + (1 - t) x0, x0 ~ N(0, 1), x1 ~ N(MU, SIGMA^2):
    x_t ~ N(t MU, v_t), v_t = (1 - t)^2 + t^2 SIGMA^2, u = MU + v_t' / (2 v_t) (x - t MU)."""
    v = (1 - t) ** 2 + t**2 * SIGMA**2
    dv = -2 * (1 - t) + 2 * t * SIGMA**2
    return MU + dv / (2 * v) * (x - t * MU)


def token_posterior(tokens):
    """Exact posterior logits of the product of categoricals Q: independent of x_t."""
    return torch.log(Q).expand(tokens.shape + (V,))


class Recorder:
    """A joint model that records the times it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, state, times):
        x, tokens = state
        assert isinstance(times, tuple) and len(times) == 2 and all(t.dim() == 0 for t in times)
        self.calls.append(tuple(float(t) for t in times))
        return gaussian_velocity(x, times[0]), token_posterior(tokens)


def joint(times=None, generator=None):
    path = MixturePath(V, "mask")
    return JointProcess(
        [
            ManifoldFlowProcess(Euclidean(1), "euler"),
            MixtureJumpProcess(path, generator=generator, dtype_categorical=torch.float64),
        ],
        times=times,
    )


def initial(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, 1, dtype=torch.float64, generator=g), torch.full((N, L), V, dtype=torch.long)), g


def assert_token_marginals(tokens):
    assert bool((tokens < V).all()), "mask tokens left at the end"
    for i in range(L):
        counts = torch.bincount(tokens[:, i], minlength=V).double()
        p = stats.chisquare(counts.numpy(), (N * Q[i]).numpy()).pvalue
        assert p > 1e-3, f"position {i}: counts {counts.tolist()} vs {(N * Q[i]).tolist()} (p = {p:.2g})"


def assert_gaussian(x, mean=MU, std=SIGMA, tol=0.05):
    assert abs(float(x.mean()) - mean) < tol and abs(float(x.std()) - std) < tol
    assert stats.kstest(x.flatten().numpy(), "norm", args=(mean, std)).pvalue > 1e-4


def test_co_generation_gets_each_marginal_with_one_model_call_per_step():
    (x0, tok0), g = initial()
    model = Recorder()
    steps = 200
    x, tokens = simulate(joint(generator=g), model, (x0, tok0), steps=steps)
    assert len(model.calls) == steps
    grid = [k / steps for k in range(steps)]
    assert [c[0] for c in model.calls] == pytest.approx(grid) and [c[1] for c in model.calls] == pytest.approx(grid)
    assert_gaussian(x)  # Euler error O(1/steps) on an exact field
    assert_token_marginals(tokens)


def test_fixed_structure_like_component_never_changes_and_the_other_is_generated():
    (x0, tok0), g = initial(1)
    data = MU + SIGMA * torch.randn(N, 1, dtype=torch.float64, generator=g)
    model = Recorder()
    traj = simulate(
        joint(times=(1.0, None), generator=g), model, (data.clone(), tok0), steps=50, return_intermediates=True
    )
    assert all(torch.equal(traj[0][k], data) for k in range(51))  # bit for bit, every step
    assert all(c[0] == 1.0 for c in model.calls) and len(model.calls) == 50
    assert_token_marginals(traj[1][-1])


def test_fixed_sequence_like_component_never_changes_and_the_flow_is_generated():
    (x0, _), g = initial(2)
    given = torch.multinomial(Q, N, replacement=True, generator=g).T.contiguous()
    model = Recorder()
    x, tokens = simulate(joint(times=(None, 1.0), generator=g), model, (x0, given.clone()), steps=200)
    assert torch.equal(tokens, given)
    assert all(c[1] == 1.0 for c in model.calls)
    assert_gaussian(x)


def test_a_component_on_its_own_clock_finishes_early_with_the_right_marginal():
    (x0, tok0), g = initial(3)
    model = Recorder()
    fast = lambda s: torch.clamp(2 * s, max=1.0)  # noqa: E731
    steps = 100
    traj = simulate(joint(times=(None, fast), generator=g), model, (x0, tok0), steps=steps, return_intermediates=True)
    seen = [c[1] for c in model.calls]
    assert seen == pytest.approx([min(1.0, 2 * k / steps) for k in range(steps)])
    half = steps // 2
    assert bool((traj[1][half] < V).all()), "the fast component must be done by mid-way"
    assert all(torch.equal(traj[1][k], traj[1][half]) for k in range(half, steps + 1))  # no step once at 1
    assert_token_marginals(traj[1][-1])
    assert_gaussian(traj[0][-1])


class CountingStep(Process):
    def __init__(self):
        self.steps = []

    def step(self, x, t, h, model_output):
        self.steps.append((float(t), float(h)))
        return x + h


def test_component_steps_follow_the_time_map_and_bad_maps_raise():
    slow, clock = CountingStep(), CountingStep()
    process = JointProcess([slow, clock], times=(lambda s: s**2, None))
    out = simulate(process, lambda x, t: (None, None), (torch.zeros(()), torch.zeros(())), steps=4)
    assert [s[0] for s in slow.steps] == pytest.approx([0, 1 / 16, 1 / 4, 9 / 16])
    assert [s[1] for s in slow.steps] == pytest.approx([1 / 16, 3 / 16, 5 / 16, 7 / 16])
    assert float(out[0]) == pytest.approx(1.0) and float(out[1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"times\[0\] runs against the clock"):
        simulate(
            JointProcess([CountingStep(), CountingStep()], times=(lambda s: 1 - s, None)),
            lambda x, t: (None, None),
            (torch.zeros(()), torch.zeros(())),
            steps=2,
        )
    with pytest.raises(ValueError, match=r"times\[1\] mapped the clock .* outside \[0, 1\]"):
        simulate(
            JointProcess([CountingStep(), CountingStep()], times=(None, lambda s: 2 * s + 0.5)),
            lambda x, t: (None, None),
            (torch.zeros(()), torch.zeros(())),
            steps=2,
        )
    with pytest.raises(ValueError, match=r"times must have one entry per component \(2\), got 3"):
        JointProcess([CountingStep(), CountingStep()], times=(None, None, None))
    with pytest.raises(ValueError, match=r"times\[0\] must be None \(the clock\), a fixed time in \[0, 1\]"):
        JointProcess([CountingStep(), CountingStep()], times=(1.5, None))
    with pytest.raises(ValueError, match=r"times\[1\] must be None"):
        JointProcess([CountingStep(), CountingStep()], times=(None, "one"))
    assert JointProcess([CountingStep(), CountingStep()], times=(torch.tensor(1.0), None)).fixed == (True, False)


# ---------------------------------------------------------------------------------------------
# the mask CTMC's sampling options


def test_temperature_draws_from_the_tempered_posterior():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64))
    path = MixturePath(V, "mask")
    solver = CTMCSolver(path, lambda x, t: logits.expand(x.shape + (V,)))
    g = torch.Generator().manual_seed(0)
    for temperature in (0.5, 2.0):
        out = solver.sample(
            torch.full((20000, 1), V), steps=3, temperature=temperature, generator=g, dtype_categorical=torch.float64
        )
        expected = torch.softmax(logits / temperature, -1) * 20000
        counts = torch.bincount(out[:, 0], minlength=V).double()
        assert stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    with pytest.raises(ValueError, match="temperature must be a finite positive number"):
        solver.sample(torch.full((2, 1), V), steps=2, temperature=0.0)


def test_confidence_unmasking_reveals_the_scheduled_count_at_the_most_confident_positions():
    path = MixturePath(V, "mask")
    length, batch = 6, 3000
    # position j's top probability grows with j
    peaks = torch.linspace(0.3, 0.9, length, dtype=torch.float64)
    probs = torch.stack([torch.tensor([p, (1 - p) / 3, (1 - p) / 3, (1 - p) / 3]) for p in peaks.tolist()])
    logits = torch.log(probs).expand(batch, length, V)
    x = torch.full((batch, length), V)
    t, h = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    random = MixtureJumpProcess(path, generator=torch.Generator().manual_seed(5)).step(x, t, h, logits)
    confident = MixtureJumpProcess(path, generator=torch.Generator().manual_seed(5), unmasking="confidence").step(
        x, t, h, logits
    )
    in_order = MixtureJumpProcess(path, generator=torch.Generator().manual_seed(5), unmasking="random_order").step(
        x, t, h, logits
    )
    revealed_random, revealed = (random < V).sum(-1), (confident < V).sum(-1)
    assert abs(float(revealed_random.double().mean()) - length * 0.3) < 0.1  # Binomial(6, 0.3)
    # the scheduled count, the same in every sequence: 6 - round(6 * 0.7) = 2
    assert bool((revealed == 2).all()) and bool(((in_order < V).sum(-1) == 2).all())
    # random order: the two positions uniformly among the six (each revealed with probability 1/3)
    share = (in_order < V).double().mean(0)
    assert float((share - 1 / 3).abs().max()) < 0.05
    # the k revealed positions are the k most confident: the last k
    positions = torch.arange(length)
    assert torch.equal(confident < V, positions >= length - revealed[:, None])
    # the last step reveals everything under either rule
    final = MixtureJumpProcess(path, unmasking="confidence").step(x, torch.tensor(0.9), torch.tensor(0.1), logits)
    assert bool((final < V).all())
    with pytest.raises(ValueError, match="unmasking must be one of"):
        MixtureJumpProcess(path, unmasking="greedy")
    with pytest.raises(ValueError, match="needs the mask source"):
        MixtureJumpProcess(MixturePath(V, "uniform"), unmasking="confidence")


def test_confidence_unmasking_leaves_padding_and_revealed_tokens_alone():
    path = MixturePath(V, "mask")
    x = torch.tensor([[V, 2, V, V, V]])
    pad = torch.tensor([[False, False, False, False, True]])
    logits = torch.log(torch.tensor([0.97, 0.01, 0.01, 0.01], dtype=torch.float64)).expand(1, 5, V)
    for seed in range(20):
        out = MixtureJumpProcess(
            path, padding_mask=pad, unmasking="confidence", generator=torch.Generator().manual_seed(seed)
        ).step(x, torch.tensor(0.0), torch.tensor(0.5), logits)
        assert int(out[0, 1]) == 2 and int(out[0, 4]) == V
    assert math.isfinite(float(logits.sum()))
