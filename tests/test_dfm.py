"""dfm: path marginals, losses against hand computations, the ELBO against the exact
likelihood, and CTMC sampling with the exact posterior against the target (chi-square)."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from dfm import CTMCSolver, MixturePath, mask_elbo, masked_cross_entropy, mixture_generalized_kl
from gm import CosineConvexScheduler, PolynomialScheduler

V, L = 5, 8


def factorised_target(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(L, V, generator=g, dtype=torch.float64)
    return torch.softmax(logits, -1)


def exact_posterior(q, path):
    """True p_{1|t}(. | x_t) for a factorised target q (L, V), as logits."""
    log_q = torch.log(q)

    def posterior(x_t, t):
        if path.kind == "mask":
            masked = (x_t == path.mask_id)[..., None]
            onehot = F.one_hot(x_t.clamp_max(V - 1), V).to(torch.float64)
            delta_logits = torch.where(onehot > 0, 0.0, -1e4)
            return torch.where(masked, log_q.expand(*x_t.shape, V), delta_logits)
        kappa = path.scheduler.kappa(torch.as_tensor(t, dtype=torch.float64)).reshape(-1, *([1] * x_t.dim()))[0]
        onehot = F.one_hot(x_t, V).to(torch.float64)
        return log_q + torch.log(kappa * onehot + (1 - kappa) / V)

    return posterior


def sample_target(q, n, g):
    return torch.multinomial(q, n, replacement=True, generator=g).T  # (n, L)


def chi_square_pvalue(samples, q):
    stat, df = 0.0, 0
    for i in range(L):
        counts = torch.bincount(samples[:, i], minlength=V).double()
        expected = q[i] * samples.shape[0]
        stat += float(((counts - expected) ** 2 / expected).sum())
        df += V - 1
    return stats.chi2.sf(stat, df)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_path_marginals_and_padding(source):
    path = MixturePath(V, source)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randint(0, V, (4000, L), generator=g)
    t = torch.full((4000,), 0.3)
    pad = torch.zeros_like(x1, dtype=torch.bool)
    pad[:, -2:] = True
    s = path.sample(None, x1, t, padding_mask=pad, generator=g)
    assert torch.equal(s.x_t[pad], x1[pad])
    kept_from_data = (s.x_t == x1)[:, :-2].double().mean()
    # P(x_t = x1) = kappa + (1 - kappa) * P(source draw equals x1)
    expected = 0.3 + (0.7 / V if source == "uniform" else 0.0)
    n = 4000 * (L - 2)
    assert abs(float(kept_from_data) - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    if source == "mask":
        assert set(s.x_t.unique().tolist()) <= set(range(V + 1))


def test_path_validation_and_custom_source():
    with pytest.raises(ValueError, match="vocab_size"):
        MixturePath(1)
    with pytest.raises(ValueError, match="source must be"):
        MixturePath(V, "gaussian")
    with pytest.raises(ValueError, match="summing to 1"):
        MixturePath(V, torch.ones(V))
    path = MixturePath(V, "mask")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 5\)"):
        path.sample(None, torch.full((2, L), V), torch.rand(2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        path.sample(None, torch.zeros(2, L, dtype=torch.long), torch.tensor([0.5, 1.5]))
    probs = torch.tensor([0.7, 0.1, 0.1, 0.05, 0.05])
    custom = MixturePath(V, probs)
    draws = custom.sample_source((20000,), generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=V).double() / 20000
    assert stats.chisquare(torch.bincount(draws, minlength=V).numpy(), (probs.double() * 20000).numpy()).pvalue > 1e-3
    assert abs(float(freq[0]) - 0.7) < 0.02


def test_masked_cross_entropy_and_generalized_kl_by_hand():
    g = torch.Generator().manual_seed(3)
    path = MixturePath(V, "mask")
    x1 = torch.randint(0, V, (3, L), generator=g)
    t = torch.tensor([0.2, 0.5, 0.9])
    x_t = path.sample(None, x1, t, generator=g).x_t
    logits = torch.randn(3, L, V, generator=g, dtype=torch.float64, requires_grad=True)
    masked = x_t == V
    expected = F.cross_entropy(logits[masked], x1[masked])
    torch.testing.assert_close(masked_cross_entropy(logits, x1, x_t, path), expected)
    # generalized KL: sum_{y != x_t} u log(u/v) - u + v with u = lam delta_{x1}, v = lam p
    p = torch.softmax(logits.detach(), -1)
    total = 0.0
    for b in range(3):
        lam = 1 / (1 - float(t[b]))
        for i in range(L):
            for y in range(V):
                if y == int(x_t[b, i]):
                    continue
                u = lam * (y == int(x1[b, i]))
                v = lam * float(p[b, i, y])
                total += (u * math.log(u / v) if u > 0 else 0.0) - u + v
    got = mixture_generalized_kl(logits, x1, x_t, t, path)
    assert float(got) == pytest.approx(total / (3 * L), rel=1e-9)
    got.backward()
    assert torch.isfinite(logits.grad).all()
    uniform = MixturePath(V, "uniform")
    xt_u = uniform.sample(None, x1, t, generator=g).x_t
    assert torch.isfinite(mixture_generalized_kl(logits, x1, xt_u, torch.ones(3), uniform))
    with pytest.raises(ValueError, match="logits must have shape"):
        masked_cross_entropy(logits[..., :3], x1, x_t, path)


def test_mask_elbo_is_tight_with_the_exact_posterior():
    """For factorised data and the true posterior, E_kappa[(1/(1-kappa)) sum_masked -log q] equals
    -log q(x1) exactly, so the Monte Carlo estimate must match it within its standard error."""
    q = factorised_target(4)
    g = torch.Generator().manual_seed(5)
    for sched in (None, CosineConvexScheduler()):
        path = MixturePath(V, "mask", sched)
        x1 = sample_target(q, 256, g)
        true_nats = -torch.log(q.gather(1, x1.T)).sum() / x1.numel()
        est = mask_elbo(exact_posterior(q, path), path, x1, n_draws=16, generator=g)
        err = abs(est.nats_per_token - float(true_nats)) / math.log(2)
        assert err < 4 * est.stderr_bits_per_token, (est, float(true_nats))
        assert est.stderr_bits_per_token < 0.05
    # a worse model gets a worse (larger) bound
    bad = mask_elbo(lambda x, t: torch.zeros(*x.shape, V), path, x1, n_draws=4, generator=g)
    assert bad.bits_per_token > est.bits_per_token
    assert bad.bits_per_token == pytest.approx(math.log2(V), rel=0.05)


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("corrector", [0.0, 1.0])
def test_sampling_with_exact_posterior_reproduces_target(source, corrector):
    q = factorised_target(6)
    path = MixturePath(V, source, PolynomialScheduler(2) if source == "uniform" else None)
    g = torch.Generator().manual_seed(7)
    solver = CTMCSolver(path, exact_posterior(q, path))
    x0 = path.sample_source((4000, L), generator=g)
    out = solver.sample(x0, steps=32, corrector=corrector, generator=g)
    assert not bool((out == V).any())
    assert chi_square_pvalue(out, q) > 1e-3
    # a wrong target must be rejected by the same test
    assert chi_square_pvalue(out, factorised_target(8)) < 1e-6


def test_sampling_from_a_later_start_time_and_float64_and_padding():
    q = factorised_target(9)
    path = MixturePath(V, "mask")
    g = torch.Generator().manual_seed(10)
    x1 = sample_target(q, 4000, g)
    x_half = path.sample(None, x1, torch.full((4000,), 0.5), generator=g).x_t
    pad = torch.zeros_like(x_half, dtype=torch.bool)
    pad[:, 0] = True
    x_half[:, 0] = 0
    out = CTMCSolver(path, exact_posterior(q, path)).sample(
        x_half,
        time_grid=(0.5, 1.0),
        steps=8,
        dtype_categorical=torch.float64,
        padding_mask=pad,
        generator=g,
        return_intermediates=True,
    )
    assert out.shape == (9, 4000, L)
    assert bool((out[:, :, 0] == 0).all())
    final = out[-1]
    assert not bool((final == V).any())
    qq = q.clone()
    qq[0] = torch.nn.functional.one_hot(torch.tensor(0), V).double()
    assert chi_square_pvalue(final, qq.clamp_min(1e-12)) > 1e-3


def test_corrector_is_robust_at_the_ends_and_validates():
    path = MixturePath(V, "uniform")
    q = factorised_target(11)
    solver = CTMCSolver(path, exact_posterior(q, path))
    x0 = path.sample_source((64, L), generator=torch.Generator().manual_seed(12))
    out = solver.sample(x0, time_grid=torch.linspace(0, 1, 5), corrector=lambda t: 50.0 / (t + 1e-3))
    assert out.shape == x0.shape and int(out.max()) < V
    mpath = MixturePath(V, "mask")
    out = CTMCSolver(mpath, exact_posterior(q, mpath)).sample(mpath.sample_source((64, L)), steps=4, corrector=100.0)
    assert not bool((out == V).any())
    with pytest.raises(ValueError, match="corrector strength"):
        solver.sample(x0, steps=2, corrector=lambda t: float("nan"))
    with pytest.raises(ValueError, match="must increase"):
        solver.sample(x0, time_grid=(1.0, 0.0), steps=2)
    with pytest.raises(ValueError, match="posterior must return logits"):
        CTMCSolver(path, lambda x, t: torch.zeros(*x.shape, V + 1)).sample(x0, steps=2)


@pytest.mark.parametrize("corrector,tol", [(0.0, None), (1.0, 0.02)])
def test_mask_fraction_follows_the_schedule(corrector, tol):
    """Marginally P(token masked at t) = 1 - kappa_t: exact for the mixture transition, up to
    the Euler error with the corrector."""
    q = factorised_target(13)
    sched = CosineConvexScheduler()
    path = MixturePath(V, "mask", sched)
    g = torch.Generator().manual_seed(14)
    traj = CTMCSolver(path, exact_posterior(q, path)).sample(
        path.sample_source((3000, L)), steps=64, corrector=corrector, generator=g, return_intermediates=True
    )
    times = torch.linspace(0, 1, 65, dtype=torch.float64)
    n = 3000 * L
    for k in (8, 16, 32, 48, 60):
        frac = float((traj[k] == V).double().mean())
        expected = 1 - float(sched.kappa(times[k]))
        bound = tol if tol is not None else 4 * math.sqrt(expected * (1 - expected) / n) + 1e-9
        assert abs(frac - expected) < bound, (k, frac, expected)
