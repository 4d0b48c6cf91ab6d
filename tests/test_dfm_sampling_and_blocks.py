"""dfm sampling options, ELBO estimators and block diffusion against independent oracles.

The oracles are built by enumeration over a small random joint distribution ``p`` on
``V^L`` (V=3, L=4, float64): exact conditionals ``p(x^i | visible tokens)`` drive the samplers
(whose output must then follow ``p`` or its conditionals, chi-square) and the ELBOs (which must
then be tight, or, for the mean-field block posterior, equal a known sum of conditional
entropies). The transformer checks compare the vectorised block-diffusion pass and the causal
model against their cached, incremental forms in float64.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from dfm import (
    BlockDiffusion,
    BlockDiffusionTransformer,
    CTMCSolver,
    MaskedDiffusionLoss,
    MixturePath,
    block_attention_mask,
    coupled_uniforms,
    filter_logits,
    mask_batch,
    mask_elbo,
)
from dfm.loss import masked_nll_sum
from dfm.transformer import TokenTransformer

V, L = 3, 4
M = V  # the mask id of MixturePath(V, "mask")
ALL = torch.cartesian_prod(*[torch.arange(V)] * L)  # (V^L, L), first position slowest
POW = V ** torch.arange(L - 1, -1, -1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread is faster (and does not contend on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# oracles


def random_joint(seed=2, scale=1.5):
    """A random distribution over V^L with full support and strong correlations."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(V**L, generator=g, dtype=torch.float64), 0)


def seq_index(x):
    return (x * POW).sum(-1)


def conditional_marginals(p, visible):
    """p(x^i = v | the tokens of ``visible`` that are >= 0), (B, L, V), by enumeration."""
    compatible = ((visible[:, None, :] < 0) | (visible[:, None, :] == ALL[None])).all(-1)  # (B, V^L)
    w = compatible.double() * p[None]
    onehot = torch.nn.functional.one_hot(ALL, V).double()  # (V^L, L, V)
    post = torch.einsum("bs,slv->blv", w, onehot)
    return post / w.sum(-1)[:, None, None]


PATTERNS = torch.cartesian_prod(*[torch.arange(-1, V)] * L)  # every visibility pattern, -1 hidden
PATTERN_POW = (V + 1) ** torch.arange(L - 1, -1, -1)


def log_conditionals(p):
    """log p(x^i | visible) for a batch of patterns (B, L) (-1: hidden), looked up in a table
    built once by enumeration over all (V+1)^L patterns."""
    table = torch.log(conditional_marginals(p, PATTERNS).clamp_min(1e-300))
    return lambda visible: table[((visible + 1) * PATTERN_POW).sum(-1)]


def exact_posterior(p, log=None):
    """posterior(x_t, t) -> log p(x^i | unmasked tokens of x_t); ``log`` collects every x_t seen."""
    lookup = log_conditionals(p)

    def posterior(x_t, t):
        if log is not None:
            log.append(x_t.clone())
        return lookup(torch.where(x_t == M, torch.full_like(x_t, -1), x_t))

    return posterior


def conditional_table(p, fixed_pos, fixed_vals):
    """p(x_free | x_fixed) as a vector over the free positions' joint values (lexicographic)."""
    keep = torch.ones(len(ALL), dtype=torch.bool)
    for i, v in zip(fixed_pos, fixed_vals):
        keep &= ALL[:, i] == v
    free = [i for i in range(L) if i not in fixed_pos]
    return p[keep] / p[keep].sum(), free  # ALL[keep] is lexicographic in the free positions


def chi2_pvalue(counts, probs):
    """Chi-square goodness of fit, cells of expected count < 5 pooled; 0 if an impossible cell
    was hit."""
    counts = np.asarray(counts, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if counts[probs == 0].sum() > 0:
        return 0.0
    expected = probs / probs.sum() * counts.sum()
    big = expected >= 5
    obs, exp = list(counts[big]), list(expected[big])
    small = ~big & (probs > 0)
    if small.any():
        obs.append(counts[small].sum())
        exp.append(expected[small].sum())
    if len(obs) == 1:  # one possible outcome, and only it was drawn
        return 1.0
    return stats.chisquare(obs, exp).pvalue


def table_model(seed, vocab=V, length=L, time_weight=0.0):
    """An arbitrary (not exact) posterior: logits[i] = bias[i] + sum_j W[j, x_t^j, i]
    (+ t * T[i]), a fixed function of the whole noisy sequence."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(length, vocab + 1, length, vocab, generator=g, dtype=torch.float64)
    bias = torch.randn(length, vocab, generator=g, dtype=torch.float64)
    T = torch.randn(length, vocab, generator=g, dtype=torch.float64)

    def model(x_t, t=None):
        logits = bias + W[torch.arange(length)[None, :], x_t].sum(1)
        if time_weight:
            logits = logits + time_weight * t.double()[:, None, None] * T
        return logits

    return model


def subset_elbo(model_nll, n):
    """Exact expectation of the count estimator: sum over nonempty S of
    (|S|-1)!(n-|S|)!/n! * sum_{i in S} nll(S, i) (the time estimator has the same expectation:
    int_0^1 r^{|S|-1} (1-r)^{n-|S|} dr is the same weight)."""
    total = 0.0
    for m in range(1, n + 1):
        weight = math.factorial(m - 1) * math.factorial(n - m) / math.factorial(n)
        for S in itertools.combinations(range(n), m):
            total += weight * sum(model_nll(S, i) for i in S)
    return total


# ----------------------------------------------------------------------------------------------
# 1. block attention mask


@pytest.mark.parametrize("length,b", [(1, 1), (4, 1), (4, 2), (4, 4), (6, 2), (6, 3), (6, 6), (8, 2), (9, 3)])
def test_block_attention_mask_entry_by_entry(length, b):
    mask = block_attention_mask(length, b)
    size = 2 * length - b
    assert mask.shape == (size, size) and mask.dtype == torch.bool

    def token(k):  # (is_noisy, position)
        return (True, k) if k < length else (False, k - length)

    for q in range(size):
        for k in range(size):
            q_noisy, i = token(q)
            k_noisy, j = token(k)
            if q_noisy and k_noisy:
                rule = i // b == j // b
            elif q_noisy:
                rule = j // b < i // b
            elif k_noisy:
                rule = False
            else:
                rule = j // b <= i // b
            assert bool(mask[q, k]) == rule, (length, b, q, k)
    if b == 1:  # autoregressive: noisy i sees exactly itself and clean 0..i-1
        assert mask[:length].sum(1).tolist() == [i + 1 for i in range(length)]
    if b == length:  # one block: noisy tokens see each other, nothing else
        assert mask.shape == (length, length) and bool(mask.all())


@pytest.mark.parametrize("length,b", [(4, 3), (6, 4), (5, 2), (4, 0), (4, 5)])
def test_block_attention_mask_rejects_non_dividing_block(length, b):
    with pytest.raises(ValueError, match="block_size"):
        block_attention_mask(length, b)


# ----------------------------------------------------------------------------------------------
# 2. exact-posterior samplers: infilling, temperature and filtering, argument errors


def _free_joint_counts(out, free):
    code = torch.zeros(len(out), dtype=torch.long)
    for i in free:
        code = code * V + out[:, i]
    return torch.bincount(code, minlength=V ** len(free)).double()


def test_infilling_random_order_is_exact_any_order_sampling():
    p = random_joint()
    path = MixturePath(V, "mask")
    n = 20000
    fixed_pos, fixed_vals = (0, 3), (1, 2)
    x0 = torch.full((n, L), M)
    fixed = torch.zeros(n, L, dtype=torch.bool)
    for i, v in zip(fixed_pos, fixed_vals):
        x0[:, i] = v
        fixed[:, i] = True
    cond, free = conditional_table(p, fixed_pos, fixed_vals)
    # the target is far from the product of its marginals: a sampler that reveals the free tokens
    # together (independently) must fail the same test
    c2 = cond.view(V, V)
    product = (c2.sum(1)[:, None] * c2.sum(0)[None, :]).flatten()
    assert float((cond - product).abs().sum()) / 2 > 0.1

    log = []
    out = CTMCSolver(path, exact_posterior(p, log)).sample(
        x0, steps=L, unmasking="random_order", fixed=fixed, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out[:, list(fixed_pos)], x0[:, list(fixed_pos)])
    assert not bool((out == M).any())
    # one reveal per step, at most one position left for the final step
    masked = torch.stack([(x == M).sum(-1) for x in log] + [(out == M).sum(-1)])  # (calls + 1, n)
    assert bool((masked[:-1] - masked[1:] <= 1).all())
    assert bool((masked[-2] <= 1).all())
    for x in log:  # the fixed tokens are seen by the model throughout
        assert torch.equal(x[:, list(fixed_pos)], x0[:, list(fixed_pos)])
    # the order is uniformly random: the first of the two free positions revealed is a fair coin
    times = _reveal_times(log, out)
    first = (times[:, free[1]] < times[:, free[0]]).long()
    assert chi2_pvalue(torch.bincount(first, minlength=2).numpy(), [0.5, 0.5]) > 1e-3
    counts = _free_joint_counts(out, free)
    assert chi2_pvalue(counts, cond) > 1e-3
    assert chi2_pvalue(counts, product) < 1e-6

    # the exact CTMC ("random", many small steps) matches up to its O(1/steps) simultaneous reveals
    out = CTMCSolver(path, exact_posterior(p)).sample(
        x0, steps=200, fixed=fixed, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(out[:, list(fixed_pos)], x0[:, list(fixed_pos)])
    assert not bool((out == M).any())
    freq = _free_joint_counts(out, free) / n
    assert float((freq - cond).abs().sum()) / 2 < 0.03
    assert float((freq - product).abs().sum()) / 2 > 0.07


def test_fixed_positions_survive_the_corrector():
    """The corrector re-masks revealed tokens; fixed ones must never change, at any grid time."""
    p = random_joint()
    path = MixturePath(V, "mask")
    n = 2000
    x0 = torch.full((n, L), M)
    x0[:, 1] = 0
    x0[:, 3] = 2
    fixed = x0 != M
    traj = CTMCSolver(path, exact_posterior(p)).sample(
        x0, steps=30, corrector=3.0, fixed=fixed, return_intermediates=True, generator=torch.Generator().manual_seed(53)
    )
    assert bool((traj[:, fixed] == x0[fixed]).all())
    assert not bool((traj[-1] == M).any())
    # the corrector did re-mask free tokens along the way (the free positions are not monotone)
    free = traj[:, :, [0, 2]]
    remasked = ((free[:-1] != M) & (free[1:] == M)).any()
    assert bool(remasked)


def _hand_filtered_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """Temperature, then top-k, then nucleus, with plain Python loops."""
    z = [float(v) / temperature for v in logits]
    keep = set(range(len(z)))
    if top_k is not None:
        kth = sorted(z, reverse=True)[top_k - 1]
        keep = {i for i in keep if z[i] >= kth}
    if top_p is not None:
        weights = {i: math.exp(z[i]) for i in keep}
        total = sum(weights.values())
        mass, chosen = 0.0, set()
        for i in sorted(keep, key=lambda i: -z[i]):
            chosen.add(i)
            mass += weights[i] / total
            if mass >= top_p:
                break
        keep = chosen
    weights = [math.exp(z[i]) if i in keep else 0.0 for i in range(len(z))]
    total = sum(weights)
    return [w / total for w in weights]


def test_filter_logits_by_hand():
    logits = torch.tensor([[1.5, 0.7, 0.2, -0.4, -1.0], [-1.0, 3.0, 0.0, 2.9, -5.0]], dtype=torch.float64)
    inf = float("-inf")
    # top-k keeps the k largest per row
    expected = torch.tensor([[1.5, 0.7, inf, inf, inf], [inf, 3.0, inf, 2.9, inf]], dtype=torch.float64)
    assert torch.equal(filter_logits(logits, top_k=2), expected)
    # top-p 0.7: row 0 probs .512, .230, .140, ... -> cumulative .742 after two tokens; row 1:
    # probs .509, .461 -> two tokens reach 0.7
    probs = torch.softmax(logits, -1)
    assert float(probs[0, 0]) < 0.7 < float(probs[0, :2].sum())
    assert float(probs[1, 1]) < 0.7 < float(probs[1, 1] + probs[1, 3])
    assert torch.equal(filter_logits(logits, top_p=0.7), expected)
    # top-p 0.5: the first token of row 0 (.512) is enough; row 1's first (.509) too
    expected_half = torch.tensor([[1.5, inf, inf, inf, inf], [inf, 3.0, inf, inf, inf]], dtype=torch.float64)
    assert torch.equal(filter_logits(logits, top_p=0.5), expected_half)
    # a tiny top_p keeps the most probable token; top_p = 1 and top_k >= V change nothing
    assert torch.equal(filter_logits(logits, top_p=1e-9), expected_half)
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=5), logits)
    assert torch.equal(filter_logits(logits, top_k=7), logits)
    # ties at the k-th value are kept
    tied = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert torch.equal(filter_logits(tied, top_k=2), torch.tensor([1.0, 1.0, 1.0, inf], dtype=torch.float64))
    # top-k then top-p on the renormalised survivors, over batch dims
    batch = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = filter_logits(batch, top_k=4, top_p=0.6)
    for row, got in zip(batch.view(-1, 6), out.view(-1, 6)):
        hand = _hand_filtered_probs(row.tolist(), top_k=4, top_p=0.6)
        for v in range(6):
            assert (got[v] == row[v]) if hand[v] > 0 else (got[v] == inf)


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [(1.0, None, None), (0.5, None, None), (2.0, 2, None), (1.0, None, 0.7), (1.3, 3, 0.9), (0.8, 1, None)],
)
def test_temperature_and_filtering_draws(temperature, top_k, top_p):
    vocab = 5
    logits = torch.tensor([1.5, 0.7, 0.2, -0.4, -1.0], dtype=torch.float64)
    path = MixturePath(vocab, "mask")
    n = 20000
    solver = CTMCSolver(path, lambda x, t: logits.expand(*x.shape, vocab))
    out = solver.sample(
        torch.full((n, 1), vocab),
        steps=1,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generator=torch.Generator().manual_seed(3),
    )
    counts = torch.bincount(out[:, 0], minlength=vocab + 1)
    assert int(counts[vocab]) == 0
    target = _hand_filtered_probs(logits.tolist(), temperature, top_k, top_p)
    if top_k is not None:
        assert sum(t > 0 for t in target) == top_k
    if top_p == 0.7:
        assert sum(t > 0 for t in target) == 2
    assert chi2_pvalue(counts[:vocab].numpy(), target) > 1e-3
    # the unfiltered, untempered distribution is rejected whenever it differs
    if (temperature, top_k, top_p) != (1.0, None, None):
        assert chi2_pvalue(counts[:vocab].numpy(), torch.softmax(logits, 0).tolist()) < 1e-6


def test_sampler_argument_errors():
    p = random_joint()
    path = MixturePath(V, "mask")
    solver = CTMCSolver(path, exact_posterior(p))
    x0 = torch.full((2, L), M)
    for bad in (0, 0.0, 1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="top_p"):
            solver.sample(x0, steps=2, top_p=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_k"):
            solver.sample(x0, steps=2, top_k=bad)
    fixed = torch.zeros(2, L, dtype=torch.bool)
    fixed[:, 1] = True
    with pytest.raises(ValueError, match="fixed positions"):  # a mask token at a fixed position
        solver.sample(x0, steps=2, fixed=fixed)
    with pytest.raises(ValueError, match="fixed"):
        solver.sample(x0, steps=2, fixed=torch.zeros(2, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="fixed"):
        solver.sample(x0, steps=2, fixed=torch.zeros(2, L, dtype=torch.long))
    with pytest.raises(ValueError, match="fixed"):
        solver.sample(x0, steps=2, fixed=[[False] * L] * 2)
    for bad in (0, -1, L + 1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="block_size"):
            solver.sample(x0, steps=2, block_size=bad)
    with pytest.raises(ValueError, match="return_intermediates"):
        solver.sample(x0, steps=2, block_size=2, return_intermediates=True)
    uniform = MixturePath(V, "uniform")
    with pytest.raises(ValueError, match="block_size"):
        CTMCSolver(uniform, lambda x, t: torch.zeros(*x.shape, V)).sample(
            torch.zeros(2, L, dtype=torch.long), steps=2, block_size=2
        )
    with pytest.raises(ValueError, match="unmasking"):
        solver.sample(x0, steps=2, unmasking="left_to_right")


# ----------------------------------------------------------------------------------------------
# 3. semi-autoregressive block_size and confidence unmasking


def _reveal_times(log, out):
    """Per sample and position, the index of the first posterior call that saw it unmasked
    (len(log) if only the output has it)."""
    seen = torch.stack([x != M for x in log] + [out != M])  # (calls + 1, n, L)
    return seen.double().argmax(0)  # first True


@pytest.mark.parametrize("block", [1, 2, 3])
def test_semi_autoregressive_blocks_follow_p_and_reveal_in_block_order(block):
    p = random_joint()
    path = MixturePath(V, "mask")
    n = 20000
    log = []
    out = CTMCSolver(path, exact_posterior(p, log)).sample(
        torch.full((n, L), M),
        steps=block,
        block_size=block,
        unmasking="random_order",
        generator=torch.Generator().manual_seed(4),
    )
    assert not bool((out == M).any())
    counts = torch.bincount(seq_index(out), minlength=V**L)
    assert chi2_pvalue(counts.numpy(), p.numpy()) > 1e-3
    # negative control: the product of single-site marginals is rejected
    P = p.view(*[V] * L)
    marg = [P.sum(dim=[d for d in range(L) if d != i]) for i in range(L)]
    product = torch.ones(len(ALL), dtype=torch.float64)
    for i in range(L):
        product *= marg[i][ALL[:, i]]
    assert chi2_pvalue(counts.numpy(), product.numpy()) < 1e-6

    times = _reveal_times(log, out)  # (n, L)
    starts = list(range(0, L, block))
    for k, s in enumerate(starts[:-1]):
        this, nxt = times[:, s : s + block], times[:, s + block : s + 2 * block]
        assert bool((this.max(1).values < nxt.min(1).values).all()), k
    # one position per call: the reveal times of a sequence are all different
    assert bool((times.sort(1).values.diff(dim=1) > 0).all())
    # while block k is filled the later blocks are masked in what the posterior sees
    for x in log:
        still = (x == M).any(0).nonzero()
        if not len(still):  # a step of a block with nothing left to reveal
            continue
        first_block = int(still.min()) // block * block  # the block of the first masked position
        assert bool((x[:, first_block + block :] == M).all())


def test_confidence_unmasking_reveals_the_most_confident_first():
    """With a posterior whose per-position confidence is fixed and distinct, confidence
    unmasking with one reveal per step reveals positions in decreasing confidence (within each
    block with block_size)."""
    vocab, length = 4, 6
    peak = torch.tensor([0.5, 3.0, 1.0, 2.5, 0.1, 1.7], dtype=torch.float64)  # confidence order 1,3,5,2,0,4
    logits = torch.zeros(length, vocab, dtype=torch.float64)
    logits[:, 0] = peak
    path = MixturePath(vocab, "mask")
    log = []

    def posterior(x, t):
        log.append(x.clone())
        return logits.expand(*x.shape, vocab)

    n = 50
    out = CTMCSolver(path, posterior).sample(
        torch.full((n, length), vocab), steps=length, unmasking="confidence", generator=torch.Generator().manual_seed(5)
    )
    seen = torch.stack([x != vocab for x in log] + [out != vocab])
    times = seen.double().argmax(0)
    expected_order = peak.argsort(descending=True)
    for row in times:
        assert torch.equal(row.argsort(), expected_order)
    log.clear()
    out = CTMCSolver(path, posterior).sample(
        torch.full((n, length), vocab),
        steps=2,
        unmasking="confidence",
        block_size=2,
        generator=torch.Generator().manual_seed(6),
    )
    times = torch.stack([x != vocab for x in log] + [out != vocab]).double().argmax(0)
    for row in times:
        assert row.argsort().tolist() == [1, 0, 3, 2, 5, 4]


# ----------------------------------------------------------------------------------------------
# 4. the estimators and couplings of dfm.masking


@pytest.mark.parametrize("times", ["uniform", "stratified", "antithetic", "low_discrepancy"])
def test_count_estimator_draws_m_uniformly_and_subsets_uniformly(times):
    path = MixturePath(V, "mask")
    n_seq, group = 6000, 4
    x1 = torch.randint(0, V, (n_seq, 8), generator=torch.Generator().manual_seed(7))
    b = mask_batch(
        x1, path, group_size=group, estimator="count", times=times, generator=torch.Generator().manual_seed(8)
    )
    masked = b.masked.view(n_seq, 2, group)
    m = masked.sum(-1)  # (n_seq, 2)
    assert int(m.min()) >= 1 and int(m.max()) <= group
    counts = torch.bincount(m.flatten() - 1, minlength=group)
    assert chi2_pvalue(counts.numpy(), [1 / group] * group) > 1e-3
    # given m the set is uniform: P(S) = 1 / (n * C(n, |S|)) over all nonempty subsets
    code = (masked.long() * (2 ** torch.arange(group))).sum(-1).flatten()
    subsets = torch.bincount(code, minlength=2**group)
    probs = [0.0] + [1 / (group * math.comb(group, bin(s).count("1"))) for s in range(1, 2**group)]
    assert chi2_pvalue(subsets.numpy(), probs) > 1e-3
    # weights n/m where masked, 0 elsewhere; tokens masked exactly there; t = kappa = 1 - m/n
    w = b.weight.view(n_seq, 2, group)
    expected_w = torch.where(masked, group / m[..., None].double(), torch.zeros((), dtype=torch.float64))
    # (the weights are float32-rounded: see test_count_weights_are_float64_exact)
    torch.testing.assert_close(w.double(), expected_w, rtol=1e-7, atol=0)
    assert torch.equal(b.x_t, torch.where(b.masked, torch.full_like(x1, M), x1))
    torch.testing.assert_close(b.t.double(), 1 - m.double() / group)
    assert b.group_size == group


def test_count_estimator_with_padding_and_clipped_range():
    path = MixturePath(V, "mask")
    n_seq = 8000
    x1 = torch.randint(0, V, (n_seq, 4), generator=torch.Generator().manual_seed(9))
    pad = torch.zeros_like(x1, dtype=torch.bool)
    pad[:, 3] = True  # three counted positions
    b = mask_batch(x1, path, estimator="count", padding_mask=pad, generator=torch.Generator().manual_seed(10))
    assert not bool(b.masked[:, 3].any()) and bool((b.weight[:, 3] == 0).all())
    m = b.masked.sum(-1)
    assert chi2_pvalue(torch.bincount(m - 1, minlength=3).numpy(), [1 / 3] * 3) > 1e-3
    torch.testing.assert_close(
        b.weight.double(), torch.where(b.masked, 3 / m[:, None].double(), torch.zeros(()).double()), rtol=1e-7, atol=0
    )

    # clipped: m/n in [0.3, 0.8] -> m uniform on {3, ..., 8} for n = 10
    x10 = torch.randint(0, V, (n_seq, 10), generator=torch.Generator().manual_seed(11))
    b = mask_batch(
        x10, path, estimator="count", mask_rate_range=(0.3, 0.8), generator=torch.Generator().manual_seed(12)
    )
    m = b.masked.sum(-1)
    assert int(m.min()) == 3 and int(m.max()) == 8
    assert chi2_pvalue(torch.bincount(m - 3, minlength=6).numpy(), [1 / 6] * 6) > 1e-3
    # time estimator: the rate 1 - t is uniform on (0.3, 0.8], weights 1 / rate
    b = mask_batch(
        x10,
        path,
        estimator="time",
        mask_rate_range=(0.3, 0.8),
        times="uniform",
        generator=torch.Generator().manual_seed(13),
    )
    rate = 1 - b.t[:, 0].double()
    assert float(rate.min()) > 0.3 - 1e-12 and float(rate.max()) <= 0.8 + 1e-12
    assert stats.kstest(rate.numpy(), stats.uniform(loc=0.3, scale=0.5).cdf).pvalue > 1e-3
    torch.testing.assert_close(b.weight.double(), torch.where(b.masked, 1 / rate[:, None], torch.zeros(()).double()))


@pytest.mark.parametrize("times", ["uniform", "stratified"])
def test_time_estimator_weight_times_masked_has_mean_one(times):
    path = MixturePath(V, "mask")
    n_seq = 100000
    x1 = torch.zeros(n_seq, L, dtype=torch.long)
    b = mask_batch(x1, path, estimator="time", times=times, generator=torch.Generator().manual_seed(14))
    contrib = (b.weight.double() * b.masked.double()).mean(0)  # per position
    assert bool(((contrib - 1).abs() < 0.04).all()), contrib
    # each position is masked with probability r, the rate of its sequence (r = 1 - t, linear)
    rate = (1 - b.t[:, 0].double())[:, None].expand(-1, L)
    for low in (0.0, 0.25, 0.5, 0.75):
        sel = (rate >= low) & (rate < low + 0.25)
        frac = b.masked[sel].double().mean()
        expected = rate[sel].mean()
        assert abs(float(frac - expected)) < 4 * math.sqrt(float(expected * (1 - expected)) / int(sel.sum())) + 1e-3
    # all masked positions of a sequence share the weight 1 / r (t is in the default dtype: compare rates)
    inf = torch.full((), float("inf"), dtype=torch.float64)
    has = b.masked.any(-1)
    w_max = torch.where(b.masked, b.weight.double(), -inf).amax(-1)[has]
    w_min = torch.where(b.masked, b.weight.double(), inf).amin(-1)[has]
    assert torch.equal(w_max, w_min)
    assert float((1 / w_max - rate[has][:, 0]).abs().max()) < 1e-6
    assert bool((b.weight[~b.masked] == 0).all())


def test_estimators_have_the_same_expectation_and_count_has_lower_variance():
    """For a fixed, arbitrary (not exact) posterior both estimators are unbiased for the same
    bound, computed exactly here by enumerating the masked subsets."""
    model = table_model(15)
    path = MixturePath(V, "mask")
    x = torch.tensor([2, 0, 1, 1])

    def nll(S, i):
        x_t = x.clone()
        x_t[list(S)] = M
        return -float(torch.log_softmax(model(x_t[None])[0, i], -1)[x[i]])

    exact = subset_elbo(nll, L)
    n = 40000
    x1 = x.expand(n, L).clone()
    results = {}
    for estimator in ("count", "time"):
        b = mask_batch(x1, path, estimator=estimator, times="uniform", generator=torch.Generator().manual_seed(16))
        values = masked_nll_sum(model(b.x_t), x1, b)
        mean, se = float(values.mean()), float(values.std()) / math.sqrt(n)
        assert abs(mean - exact) < 4.5 * se, (estimator, mean, exact, se)
        results[estimator] = float(values.var())
        # and through mask_elbo (one model call per draw)
        est = mask_elbo(
            lambda x_t, t: model(x_t),
            path,
            x.expand(8, L).clone(),
            n_draws=600,
            estimator=estimator,
            generator=torch.Generator().manual_seed(17),
        )
        se_nats = est.stderr_bits_per_token * math.log(2) * L
        assert abs(est.nats_per_token * L - exact) < 4.5 * se_nats, (estimator, est, exact)
    assert results["count"] < 0.7 * results["time"], results


def test_coupled_uniforms_are_marginally_uniform_and_coupled():
    g = torch.Generator().manual_seed(18)
    reps = 2000
    for scheme in ("uniform", "stratified", "antithetic", "low_discrepancy"):
        for n in (7, 10):
            u = torch.stack([coupled_uniforms(n, scheme, g) for _ in range(reps)])  # (reps, n)
            assert u.dtype == torch.float64 and bool(((u >= 0) & (u < 1)).all())
            for col in (0, n - 1):
                assert stats.kstest(u[:, col].numpy(), "uniform").pvalue > 1e-3, (scheme, n, col)
            assert stats.kstest(u.flatten().numpy(), "uniform").pvalue > 1e-3, (scheme, n)
            strata = torch.floor(u * n).long().sort(1).values
            if scheme in ("stratified", "low_discrepancy"):  # one draw per stratum [k/n, (k+1)/n)
                assert torch.equal(strata, torch.arange(n).expand(reps, n))
            if scheme == "low_discrepancy":  # a shifted lattice
                torch.testing.assert_close(
                    u.sort(1).values.diff(dim=1), torch.full((reps, n - 1), 1 / n, dtype=torch.float64)
                )
            if scheme == "antithetic":
                pair = (u[:, :, None] + u[:, None, :] - 1).abs() < 1e-12
                pair &= ~torch.eye(n, dtype=torch.bool)
                paired = pair.any(-1).sum(-1)
                assert bool((paired >= 2 * (n // 2)).all())
                if n % 2 == 0:
                    s = u.sort(1).values
                    torch.testing.assert_close(s + s.flip(1), torch.ones_like(s), atol=1e-15, rtol=0)
            if scheme == "uniform":  # independent: the spread of strata hits are not one-per-stratum
                assert not torch.equal(strata, torch.arange(n).expand(reps, n))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n must be"):
            coupled_uniforms(bad, "uniform")
    with pytest.raises(ValueError, match="times"):
        coupled_uniforms(4, "sobol")


# ----------------------------------------------------------------------------------------------
# 5. the whole-sequence ELBO is tight with the exact posterior


def test_mask_elbo_is_tight_for_a_correlated_joint():
    p = random_joint()
    path = MixturePath(V, "mask")
    g = torch.Generator().manual_seed(19)
    x1 = ALL[torch.multinomial(p, 6, replacement=True, generator=g)]
    x1 = torch.cat([x1, ALL[p.argmin()][None]])  # also the least likely sequence
    posterior = exact_posterior(p)
    target = -torch.log(p[seq_index(x1)])
    # the count estimator's exact expectation (enumeration over subsets) is -log p(x) per x
    for x, tgt in zip(x1, target):

        def nll(S, i, x=x):
            x_t = x.clone()
            x_t[list(S)] = M
            return -float(posterior(x_t[None], None)[0, i, x[i]])

        assert subset_elbo(nll, L) == pytest.approx(float(tgt), abs=1e-10)
    total = float(target.sum())
    for estimator in ("count", "time"):
        est = mask_elbo(
            posterior, path, x1, n_draws=400, estimator=estimator, generator=torch.Generator().manual_seed(20)
        )
        got = est.nats_per_token * est.n_tokens
        se = est.stderr_bits_per_token * math.log(2) * est.n_tokens
        assert abs(got - total) < 4.5 * se, (estimator, got, total, se)
        assert se < 0.1 * total
    # the uniform model: every masked token costs log V and the weights of a sequence sum to L
    worse = mask_elbo(
        lambda x_t, t: torch.zeros(*x_t.shape, V, dtype=torch.float64),
        path,
        x1,
        n_draws=4,
        generator=torch.Generator().manual_seed(21),
    )
    assert worse.nats_per_token == pytest.approx(math.log(V), rel=1e-7)  # exact up to float32 weights


# ----------------------------------------------------------------------------------------------
# 6. block diffusion bound with oracle block models


class BlockOracle:
    """A block-diffusion model from p: each noisy position of block k gets log p(x^i | clean
    earlier blocks of x1) ("mean-field": its own block's visible tokens ignored) or, with
    ``within=True``, log p(x^i | clean earlier blocks, visible tokens of its own block) (the
    true posterior). Sampling: the cache is the clean prefix."""

    def __init__(self, p, block, within):
        self.p, self.b, self.within = p, block, within
        self.lookup = log_conditionals(p)

    def _block(self, prefix, x_block, start):
        visible = torch.full((len(x_block), L), -1, dtype=torch.long)
        visible[:, :start] = prefix
        if self.within:
            visible[:, start : start + self.b] = torch.where(x_block == M, -1, x_block)
        return self.lookup(visible)[:, start : start + self.b]

    def __call__(self, x_t, x1):
        return torch.cat([self._block(x1[:, :s], x_t[:, s : s + self.b], s) for s in range(0, L, self.b)], 1)

    def block_logits(self, x_block, cache, start):
        prefix = torch.zeros(len(x_block), 0, dtype=torch.long) if cache is None else cache
        assert prefix.shape[1] == start
        return self._block(prefix, x_block, start)

    def extend(self, x_block, cache, start):
        assert not bool((x_block == M).any())
        return x_block.clone() if cache is None else torch.cat([cache, x_block], 1)


def _marginal_nll(p, x, block):
    """sum_i -log p(x^i | x^{(<k(i))}) by direct sums over the joint table."""
    P = p.view(*[V] * L)
    total = 0.0
    for i in range(L):
        k0 = i // block * block  # conditioning on positions < k0
        summed = [d for d in range(L) if d >= k0 and d != i]
        joint = P.sum(dim=summed) if summed else P  # (torch sums everything for dim=[])
        # joint is over positions (0..k0-1, i) in order
        num = float(joint[tuple(x[:k0].tolist()) + (int(x[i]),)])
        den = float(joint[tuple(x[:k0].tolist())].sum())
        total -= math.log(num / den)
    return total


def _block_elbo_per_x(model, block, reps, seed):
    """Per sequence of V^L: the block-ELBO estimate (nats per sequence) and its standard error,
    from ``reps`` draws (the batch holds x repeated)."""
    bd = BlockDiffusion(MixturePath(V, "mask"), block)
    g = torch.Generator().manual_seed(seed)
    ests, ses = [], []
    for x in ALL:
        est = bd.elbo(model, x.expand(reps, L).clone(), generator=g, estimator="count")
        ests.append(est.nats_per_token * L)
        ses.append(est.stderr_bits_per_token * math.log(2) * L)
    return torch.tensor(ests, dtype=torch.float64), torch.tensor(ses, dtype=torch.float64)


def test_block_elbo_with_mean_field_oracle_tightens_as_blocks_shrink():
    p = random_joint()
    entropy = float(-(p * p.log()).sum())
    neg_log_p = -torch.log(p)
    means = {}
    for block in (1, 2, 4):
        model = BlockOracle(p, block, within=False)
        est, se = _block_elbo_per_x(model, block, reps=256, seed=22 + block)
        exact = torch.tensor([_marginal_nll(p, x, block) for x in ALL], dtype=torch.float64)
        if block == 1:  # autoregressive: deterministic (zero spread up to the rounding of var) and exact
            assert bool((se < 1e-12).all())
            torch.testing.assert_close(est, neg_log_p, atol=1e-10, rtol=0)
            torch.testing.assert_close(exact, neg_log_p, atol=1e-10, rtol=0)
        else:
            assert bool((se > 0).all())
            assert float(((est - exact) / se).abs().max()) < 5.5
        mean, mean_se = float((p * est).sum()), float(((p * se) ** 2).sum().sqrt())
        assert abs(mean - float((p * exact).sum())) <= 4.5 * mean_se + 1e-10
        means[block] = (mean, mean_se)
    assert means[1][0] == pytest.approx(entropy, abs=1e-10)
    for small, big in ((1, 2), (2, 4)):
        gap = means[big][0] - means[small][0]
        assert gap > 0.1 and gap > 6 * math.hypot(means[big][1], means[small][1]), means


def test_block_elbo_with_true_within_block_posterior_is_tight():
    p = random_joint()
    neg_log_p = -torch.log(p)
    for block in (1, 2, 4):
        est, se = _block_elbo_per_x(BlockOracle(p, block, within=True), block, reps=128, seed=30 + block)
        if block == 1:
            assert bool((se < 1e-12).all())
            torch.testing.assert_close(est, neg_log_p, atol=1e-10, rtol=0)
        else:
            assert float(((est - neg_log_p) / se).abs().max()) < 5.5
            mean, mean_se = float((p * est).sum()), float(((p * se) ** 2).sum().sqrt())
            assert abs(mean - float((p * neg_log_p).sum())) < 4.5 * mean_se


@pytest.mark.parametrize("block", [2, 4])
def test_block_diffusion_sample_with_true_oracle_follows_the_conditional(block):
    p = random_joint()
    n = 20000
    prompt = (2,)
    x0 = torch.full((n, L), M)
    x0[:, 0] = prompt[0]
    bd = BlockDiffusion(MixturePath(V, "mask"), block)
    out = bd.sample(
        BlockOracle(p, block, within=True), x0, unmasking="random_order", generator=torch.Generator().manual_seed(40)
    )
    assert bool((out[:, 0] == prompt[0]).all()) and not bool((out == M).any())
    cond, free = conditional_table(p, (0,), prompt)
    counts = _free_joint_counts(out, free)
    assert chi2_pvalue(counts.numpy(), cond.numpy()) > 1e-3
    # the mean-field oracle samples each block's tokens independently given the prefix: wrong
    out_mf = bd.sample(
        BlockOracle(p, block, within=False), x0, unmasking="random_order", generator=torch.Generator().manual_seed(41)
    )
    assert chi2_pvalue(_free_joint_counts(out_mf, free).numpy(), cond.numpy()) < 1e-6


# ----------------------------------------------------------------------------------------------
# 7. BlockDiffusionTransformer: vectorised pass vs cache, AR likelihood, causality, sampling


def _small_block_model(vocab, block, seed=0):
    torch.manual_seed(seed)
    model = BlockDiffusionTransformer(vocab, block, width=16, depth=2, heads=2).double().eval()
    return model


def _cached_logits(model, x_t, x1, block):
    cache, out = None, []
    for s in range(0, x1.shape[1], block):
        out.append(model.block_logits(x_t[:, s : s + block], cache, s))
        if s + block < x1.shape[1]:
            cache = model.extend(x1[:, s : s + block], cache, s)
    return torch.cat(out, 1)


@pytest.mark.parametrize("block", [1, 2, 3, 6])
def test_block_transformer_forward_equals_cached_block_logits(block):
    vocab, length = 5, 6
    model = _small_block_model(vocab, block)
    g = torch.Generator().manual_seed(42)
    x1 = torch.randint(0, vocab, (3, length), generator=g)
    with torch.no_grad():
        x_t = torch.full_like(x1, vocab)
        torch.testing.assert_close(model(x_t, x1), _cached_logits(model, x_t, x1, block), atol=1e-10, rtol=0)
        x_t = torch.where(torch.rand(x1.shape, generator=g) < 0.5, x1, torch.full_like(x1, vocab))
        torch.testing.assert_close(model(x_t, x1), _cached_logits(model, x_t, x1, block), atol=1e-10, rtol=0)
        # the noisy x_t does matter (not a constant model)
        assert float((model(x_t, x1) - model(torch.full_like(x1, vocab), x1)).abs().max()) > 1e-6


def test_block_transformer_is_block_causal():
    vocab, length, block = 5, 6, 2
    model = _small_block_model(vocab, block, seed=1)
    g = torch.Generator().manual_seed(43)
    x1 = torch.randint(0, vocab, (4, length), generator=g)
    x_t = torch.where(torch.rand(x1.shape, generator=g) < 0.5, x1, torch.full_like(x1, vocab))
    with torch.no_grad():
        base = model(x_t, x1)
        for k in range(length // block):
            end = (k + 1) * block
            # clean tokens of block k and later, and noisy tokens of later blocks: no effect on blocks <= k
            x1_mod, xt_mod = x1.clone(), x_t.clone()
            x1_mod[:, k * block :] = (x1[:, k * block :] + 1) % vocab
            xt_mod[:, end:] = (x_t[:, end:] + 1) % (vocab + 1)
            changed = model(xt_mod, x1_mod)
            torch.testing.assert_close(changed[:, :end], base[:, :end], atol=1e-12, rtol=0)
            if end < length:
                assert float((changed[:, end:] - base[:, end:]).abs().max()) > 1e-6
            if k > 0:  # the clean token of an earlier block does change block k
                x1_prev = x1.clone()
                x1_prev[:, k * block - 1] = (x1[:, k * block - 1] + 1) % vocab
                diff = (model(x_t, x1_prev) - base).abs()
                assert float(diff[:, k * block : end].amax()) > 1e-6
                torch.testing.assert_close(
                    model(x_t, x1_prev)[:, : k * block], base[:, : k * block], atol=1e-12, rtol=0
                )
            # a noisy token of block k changes block k (and only blocks >= k... here: only block k)
            xt_own = x_t.clone()
            xt_own[:, k * block] = (x_t[:, k * block] + 1) % (vocab + 1)
            own = model(xt_own, x1)
            if block > 1:
                assert float((own[:, k * block : end] - base[:, k * block : end]).abs().max()) > 1e-6
            outside = torch.ones(length, dtype=torch.bool)
            outside[k * block : end] = False
            torch.testing.assert_close(own[:, outside], base[:, outside], atol=1e-12, rtol=0)


def _ar_log_probs(model, x):
    """log p(x) of the b = 1 model from the cached path, one position at a time."""
    vocab = model.vocab_size
    cache, total = None, torch.zeros(len(x), dtype=torch.float64)
    for i in range(x.shape[1]):
        logits = model.block_logits(torch.full((len(x), 1), vocab), cache, i)[:, 0]
        total += torch.log_softmax(logits, -1).gather(-1, x[:, i : i + 1])[:, 0]
        cache = model.extend(x[:, i : i + 1], cache, i)
    return total


def test_block_size_one_elbo_is_the_autoregressive_likelihood():
    vocab, length = 3, 3
    model = _small_block_model(vocab, 1, seed=2)
    allx = torch.cartesian_prod(*[torch.arange(vocab)] * length)
    with torch.no_grad():
        log_p = _ar_log_probs(model, allx)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    bd = BlockDiffusion(MixturePath(vocab, "mask"), 1)
    est = bd.elbo(model, allx, n_draws=3, generator=torch.Generator().manual_seed(44))
    assert est.stderr_bits_per_token < 1e-12
    assert est.nats_per_token * est.n_tokens == pytest.approx(float(-log_p.sum()), abs=1e-9)
    for x, lp in zip(allx[::5], log_p[::5]):
        one = bd.elbo(model, x[None], n_draws=2, generator=torch.Generator().manual_seed(45))
        assert one.stderr_bits_per_token < 1e-12
        assert one.nats_per_token * length == pytest.approx(float(-lp), abs=1e-10)
    # the estimator "time" is unbiased but not deterministic for b = 1 (weight 1/r): only the count one is
    # and the block-diffusion training loss (elbo weighting) of b = 1 is the same AR likelihood per token
    loss = bd.loss(model, allx, torch.Generator().manual_seed(46)).detach()
    assert float(loss) == pytest.approx(float(-log_p.sum()) / allx.numel(), abs=1e-10)


def test_block_diffusion_sample_keeps_the_prompt_and_unmasks_everything():
    vocab, length, block = 5, 6, 2
    model = _small_block_model(vocab, block, seed=3)
    bd = BlockDiffusion(MixturePath(vocab, "mask"), block)
    x0 = torch.full((8, length), vocab)
    x0[:, :3] = torch.tensor([4, 0, 2])  # the prompt ends inside a block
    for options in ({}, {"unmasking": "confidence", "top_k": 2}, {"unmasking": "random_order", "temperature": 0.7}):
        out = bd.sample(model, x0, generator=torch.Generator().manual_seed(47), **options)
        assert torch.equal(out[:, :3], x0[:, :3])
        assert not bool((out == vocab).any()) and int(out.min()) >= 0
        again = bd.sample(model, x0, generator=torch.Generator().manual_seed(47), **options)
        assert torch.equal(out, again)
    # an explicit fixed mask: a suffix token in the last block is kept too
    x0b = x0.clone()
    x0b[:, 5] = 1
    fixed = x0b != vocab
    out = bd.sample(model, x0b, fixed=fixed, generator=torch.Generator().manual_seed(48))
    assert torch.equal(out[fixed], x0b[fixed]) and not bool((out == vocab).any())
    with pytest.raises(ValueError, match="fixed"):
        bd.sample(model, x0, fixed=fixed.long())
    with pytest.raises(ValueError, match="block_size"):
        BlockDiffusion(MixturePath(vocab, "mask"), 4).sample(model, x0)


# ----------------------------------------------------------------------------------------------
# 8. TokenTransformer past_kv


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_causal_transformer_incremental_decoding_matches_full_pass(positions):
    vocab, length = 7, 9
    torch.manual_seed(5)
    net = (
        TokenTransformer(
            vocab,
            vocab,
            width=16,
            depth=2,
            heads=2,
            max_len=16,
            causal=True,
            time_conditioning=False,
            positions=positions,
        )
        .double()
        .eval()
    )
    tokens = torch.randint(0, vocab, (3, length), generator=torch.Generator().manual_seed(49))
    with torch.no_grad():
        full = net(tokens)
        for chunk in (1, 2, 4):
            cache, pieces = None, []
            for s in range(0, length, chunk):
                logits, kv = net(tokens[:, s : s + chunk], past_kv=cache, return_kv=True)
                pieces.append(logits)
                cache = (
                    kv
                    if cache is None
                    else [(torch.cat([k0, k], 2), torch.cat([v0, v], 2)) for (k0, v0), (k, v) in zip(cache, kv)]
                )
            torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=0)
        # causal: a later token does not change earlier logits
        changed = tokens.clone()
        changed[:, 5] = (tokens[:, 5] + 1) % vocab
        torch.testing.assert_close(net(changed)[:, :5], full[:, :5], atol=1e-12, rtol=0)
        assert float((net(changed)[:, 5:] - full[:, 5:]).abs().max()) > 1e-6


# ----------------------------------------------------------------------------------------------
# 9. MaskedDiffusionLoss


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_masked_diffusion_loss_is_a_draw_of_the_elbo(estimator):
    path = MixturePath(V, "mask")
    model = table_model(50, time_weight=0.5)  # also depends on t
    x1 = torch.randint(0, V, (16, L), generator=torch.Generator().manual_seed(51))
    loss_fn = MaskedDiffusionLoss(path, estimator=estimator)
    # one draw is exactly the weighted masked NLL of the same mask_batch draw, per token
    for seed in range(3):
        b = mask_batch(x1, path, estimator=estimator, generator=torch.Generator().manual_seed(seed))
        expected = float(masked_nll_sum(model(b.x_t, b.t[:, 0]), x1, b).sum()) / x1.numel()
        assert float(loss_fn(model, x1, torch.Generator().manual_seed(seed))) == pytest.approx(expected, rel=1e-12)
    draws = torch.tensor([float(loss_fn(model, x1, torch.Generator().manual_seed(100 + s))) for s in range(500)])
    mean, se = float(draws.mean()), float(draws.std()) / math.sqrt(len(draws))
    est = mask_elbo(model, path, x1, n_draws=500, estimator=estimator, generator=torch.Generator().manual_seed(52))
    se_elbo = est.stderr_bits_per_token * math.log(2)
    assert abs(mean - est.nats_per_token) < 4.5 * math.hypot(se, se_elbo), (mean, est)
    # "mean" weighting: each sequence's mean cross-entropy over its masked tokens, averaged
    mean_fn = MaskedDiffusionLoss(path, estimator=estimator, weighting="mean")
    b = mask_batch(x1, path, estimator=estimator, generator=torch.Generator().manual_seed(7))
    ce = -torch.log_softmax(model(b.x_t, b.t[:, 0]), -1).gather(-1, x1[..., None])[..., 0]
    per_seq = [float(ce[i][b.masked[i]].mean()) for i in range(len(x1)) if b.masked[i].any()]
    assert float(mean_fn(model, x1, torch.Generator().manual_seed(7))) == pytest.approx(
        sum(per_seq) / len(per_seq), rel=1e-12
    )


def test_masked_diffusion_loss_argument_errors():
    path = MixturePath(V, "mask")
    with pytest.raises(ValueError, match="estimator"):
        MaskedDiffusionLoss(path, estimator="bogus")
    with pytest.raises(ValueError, match="times"):
        MaskedDiffusionLoss(path, times="sobol")
    for bad in ((0.5, 0.2), (-0.1, 1.0), (0.0, 1.5), (0.3, 0.3), (0.1,), "ab", None):
        with pytest.raises(ValueError, match="mask_rate_range"):
            MaskedDiffusionLoss(path, mask_rate_range=bad)
    with pytest.raises(ValueError, match="weighting"):
        MaskedDiffusionLoss(path, weighting="sum")
    with pytest.raises(ValueError, match="source='mask'"):
        MaskedDiffusionLoss(MixturePath(V, "uniform"))
    x1 = torch.zeros(2, L, dtype=torch.long)
    with pytest.raises(ValueError, match="estimator"):
        mask_elbo(lambda x, t: torch.zeros(*x.shape, V), path, x1, estimator="exact")
    with pytest.raises(ValueError, match="group_size"):
        mask_batch(x1, path, group_size=3)


def test_count_weights_are_float64_exact():
    path = MixturePath(V, "mask")
    x1 = torch.zeros(64, 3, dtype=torch.long)
    for estimator in ("count", "time"):
        b = mask_batch(x1, path, estimator=estimator, generator=torch.Generator().manual_seed(60))
        assert b.weight.dtype == torch.float64, estimator
    b = mask_batch(x1, path, estimator="count", generator=torch.Generator().manual_seed(61))
    m = b.masked.sum(-1, keepdim=True).double()
    assert torch.equal(b.weight.double(), torch.where(b.masked, 3 / m, torch.zeros((), dtype=torch.float64)))
    # a uniform model: every masked token costs log V, the weights of a sequence sum to L: L log V exactly
    est = mask_elbo(
        lambda x_t, t: torch.zeros(*x_t.shape, V, dtype=torch.float64),
        path,
        x1,
        n_draws=4,
        generator=torch.Generator().manual_seed(62),
    )
    assert est.nats_per_token == pytest.approx(math.log(V), abs=1e-13)


@pytest.mark.parametrize("n", [4, 16])
def test_count_estimator_clipped_range_stays_inside(n):
    path = MixturePath(V, "mask")
    b = mask_batch(
        torch.zeros(2000, n, dtype=torch.long),
        path,
        estimator="count",
        mask_rate_range=(0.3, 0.8),
        generator=torch.Generator().manual_seed(63),
    )
    rate = b.masked.sum(-1).double() / n
    assert float(rate.min()) >= 0.3 and float(rate.max()) <= 0.8


def test_block_sampling_refuses_mask_tokens_at_fixed_positions_of_fully_fixed_blocks():
    from dfm import BlockDiffusion, BlockDiffusionTransformer

    path = MixturePath(5, "mask")
    model = BlockDiffusionTransformer(5, 2, width=8, depth=1, heads=1, max_len=6)
    x0 = torch.tensor([[5, 5, 1, 5, 5, 5]])
    fixed = torch.tensor([[True, True, False, False, False, False]])
    with pytest.raises(ValueError, match="mask tokens"):
        BlockDiffusion(path, 2).sample(model, x0, fixed=fixed)
