"""proteins.codesign and CodesignNetwork: equivariance of the joint network, the training times'
shares, the loss's parts when a component is given, the sampler's invariants (given components
never change, one model call per step), and the sequence ELBO against the exact likelihood of a
factorised posterior."""

import math

import pytest
import torch

from manifolds.se3 import SE3
from proteins import CodesignFlow, CodesignNetwork, CodesignPrediction
from proteins.codesign import FINAL_STRUCTURE_TIME, MASK_RESIDUE, RESIDUE_TYPES
from proteins.data import UNKNOWN_RESIDUE
from proteins.frames import frames_from_backbone, ideal_chain


def helix(batch=2, n=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    phi = math.radians(-60) + 0.2 * torch.randn(batch, n, generator=g, dtype=dtype)
    psi = math.radians(-45) + 0.2 * torch.randn(batch, n, generator=g, dtype=dtype)
    return ideal_chain(phi, psi)


def small_network(**kw):
    torch.manual_seed(0)
    return CodesignNetwork(node_dim=16, pair_dim=8, blocks=2, heads=2, head_dim=4, query_points=2, value_points=2, **kw)


def random_rigid(dtype=torch.float64, seed=3):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(4, generator=g, dtype=dtype)
    from proteins.network import quaternion_to_rotation

    return quaternion_to_rotation(q), torch.randn(3, generator=g, dtype=dtype)


@pytest.mark.parametrize("preset", [None, "small", "frameflow"])
def test_network_frames_are_equivariant_and_logits_invariant(preset):
    from proteins.training import PRESETS

    net = small_network().double() if preset is None else CodesignNetwork(**PRESETS[preset]).double()
    flow = CodesignFlow()
    mask = torch.ones(2, 10, dtype=torch.bool)
    x = flow.backbone.frames_from_atoms(helix(2, 10), mask)
    residues = torch.tensor([[0, 5, 20, 3, 20, 7, 1, 20, 19, 2]] * 2)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    rot, shift = random_rigid()
    g = SE3.from_rt(rot.expand(2, 10, 3, 3), (0.1 * shift).expand(2, 10, 3))
    out = net(x, t, residues, t.flip(0), mask)
    moved = net(g @ x, t, residues, t.flip(0), mask, CodesignPrediction(g @ out.frames, out.logits))
    again = net(x, t, residues, t.flip(0), mask, out)
    torch.testing.assert_close(moved.frames, g @ again.frames, atol=1e-10, rtol=0)
    torch.testing.assert_close(moved.logits, again.logits, atol=1e-10, rtol=0)
    # the sequence input matters (a test of the wiring, not only of the invariance)
    other = net(x, t, torch.full_like(residues, 20), t.flip(0), mask)
    assert float((other.logits - out.logits).detach().abs().max()) > 1e-4


@pytest.mark.parametrize("preset", [None, "frameflow"])
def test_network_ignores_padding_and_rejects_bad_residue_ids(preset):
    from proteins.training import PRESETS

    net = small_network().double() if preset is None else CodesignNetwork(**PRESETS[preset]).double()
    flow = CodesignFlow()
    atoms = helix(1, 8)
    mask = torch.ones(1, 8, dtype=torch.bool)
    x = flow.backbone.frames_from_atoms(atoms, mask)
    residues = torch.tensor([[0, 5, 20, 3, 20, 7, 1, 2]])
    t = torch.tensor([0.4], dtype=torch.float64)
    out = net(x, t, residues, t, mask)
    pad_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], 1)
    x_pad = torch.cat(
        [x, SE3.from_rt(torch.eye(3, dtype=x.dtype).expand(1, 3, 3, 3), torch.randn(1, 3, 3, dtype=x.dtype))], 1
    )
    padded = net(x_pad, t, torch.cat([residues, torch.tensor([[UNKNOWN_RESIDUE, 99, 4]])], 1), t, pad_mask)
    torch.testing.assert_close(padded.logits[:, :8], out.logits, atol=1e-10, rtol=0)
    torch.testing.assert_close(padded.frames[:, :8], out.frames, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"residues_t must hold residue types in \[0, 20\]"):
        net(x, t, residues.masked_fill(residues == 0, 21), t, mask)
    with pytest.raises(ValueError, match=r"t_sequence must have shape \(B,\)"):
        net(x, t, residues, torch.tensor(0.4, dtype=torch.float64), mask)
    with pytest.raises(ValueError, match="residues_t must be integer residue types"):
        net(x, t, residues.double(), t, mask)


def test_training_times_shares_and_ranges():
    flow = CodesignFlow(inverse_folding_prob=0.3, folding_prob=0.2)
    t_s, t_q = flow.training_times(20000, generator=torch.Generator().manual_seed(0))
    structure_given, sequence_given = t_s == 1, t_q == 1
    assert not bool((structure_given & sequence_given).any())
    assert abs(float(structure_given.float().mean()) - 0.3) < 0.015
    assert abs(float(sequence_given.float().mean()) - 0.2) < 0.015
    free = ~structure_given & ~sequence_given
    assert float(t_s[free].min()) >= flow.backbone.min_time and float(t_q[free].max()) < 1
    # independent times where neither is given: correlation ~ 0
    assert abs(float(torch.corrcoef(torch.stack([t_s[free], t_q[free]]))[0, 1])) < 0.03
    with pytest.raises(ValueError, match="inverse_folding_prob \\+ folding_prob must be at most 1"):
        CodesignFlow(inverse_folding_prob=0.7, folding_prob=0.5)
    with pytest.raises(ValueError, match="folding_prob must be a probability"):
        CodesignFlow(folding_prob=-0.1)


def test_noisy_residues_keep_a_share_t_and_always_mask_unknown_residues():
    flow = CodesignFlow()
    residues = torch.randint(0, 20, (4000, 10), generator=torch.Generator().manual_seed(1))
    residues[:, 3] = UNKNOWN_RESIDUE
    mask = torch.ones_like(residues, dtype=torch.bool)
    mask[:, -1] = False
    t = torch.full((4000,), 0.3)
    x_t = flow.noisy_residues(residues, t, mask, generator=torch.Generator().manual_seed(2))
    assert bool((x_t[:, 3] == MASK_RESIDUE).all()) and bool((x_t[:, -1] == MASK_RESIDUE).all())
    kept = (x_t == residues)[:, [0, 1, 2, 4, 5, 6, 7, 8]]
    assert abs(float(kept.float().mean()) - 0.3) < 0.01
    assert bool(((x_t == residues) | (x_t == MASK_RESIDUE)).all())


def test_loss_drops_the_given_component():
    net = small_network()
    flow = CodesignFlow()
    atoms = helix(3, 10, dtype=torch.float32)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[2, 7:] = False
    x1 = flow.backbone.frames_from_atoms(atoms, mask)
    residues = torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(0))
    ones, half = torch.ones(3), torch.full((3,), 0.5)
    g = torch.Generator().manual_seed(0)
    structure_given = flow.loss(net, x1, residues, mask, t=(ones, half), generator=g)
    assert structure_given.translation == 0 and structure_given.rotation == 0 and structure_given.auxiliary == 0
    assert structure_given.sequence > 0
    sequence_given = flow.loss(net, x1, residues, mask, t=(half, ones), generator=g)
    assert sequence_given.sequence == 0 and sequence_given.translation > 0
    both = flow.loss(net, x1, residues, mask, t=(half, half), generator=g, self_condition=True)
    both.total.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(gr).all()) for gr in grads)
    assert float(net.sequence_head[-1].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"t_sequence must be times in \[0, 1\]"):
        flow.loss(net, x1, residues, mask, t=(half, half + 1))
    with pytest.raises(ValueError, match="t must be a pair"):
        flow.loss(net, x1, residues, mask, t=half)
    with pytest.raises(ValueError, match=r"residues must hold residue types in \[-1, 19\]"):
        flow.loss(net, x1, residues.masked_fill(residues == residues[0, 0], 20), mask)


class CountingModel:
    """Predicts the current frames (zero velocity) and a fixed residue-type distribution."""

    def __init__(self, logits):
        self.logits, self.calls = logits, 0

    def __call__(self, x_t, t_structure, residues_t, t_sequence, mask, self_condition=None):
        self.calls += 1
        assert x_t.shape[:2] == residues_t.shape == mask.shape and t_structure.shape == t_sequence.shape
        return CodesignPrediction(x_t, self.logits.expand(residues_t.shape + (RESIDUE_TYPES,)).to(x_t.dtype))


def test_sampling_keeps_given_components_and_calls_the_model_once_per_step():
    flow = CodesignFlow()
    logits = torch.log(torch.softmax(torch.randn(RESIDUE_TYPES, generator=torch.Generator().manual_seed(0)), -1))
    atoms = helix(2, 9, dtype=torch.float32)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    atoms = atoms.masked_fill(~mask[..., None, None], 0.0)
    # inverse folding: the structure comes back unchanged (its frames where it was, Angstrom),
    # and the model saw it at t_str = 1 centred in nm at every step
    model = CountingModel(logits)
    atoms = atoms + torch.tensor([5.0, -3.0, 2.0]) * mask[..., None, None]
    seen = []

    def model_with_check(x, ts, r, tq, m, sc=None):
        seen.append((x.clone(), ts.clone()))
        return model(x, ts, r, tq, m)

    out = flow.sample(model_with_check, mask, structure=atoms, steps=7, generator=torch.Generator().manual_seed(1))
    assert model.calls == 7
    torch.testing.assert_close(out.frames, frames_from_backbone(atoms, mask))
    centred = flow.backbone.frames_from_atoms(atoms, mask)
    assert all(torch.equal(x, centred) and bool((ts == 1).all()) for x, ts in seen)
    assert bool(((out.residues >= 0) & (out.residues < 20))[mask].all()) and bool((out.residues[~mask] == -1).all())
    # folding: the sequence comes back unchanged, unknown residues stay unknown
    sequence = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(2))
    sequence[0, 4] = UNKNOWN_RESIDUE
    model = CountingModel(logits)
    times = []

    def model_with_times(x, ts, r, tq, m, sc=None):
        times.append((float(ts[0]), float(tq[0])))
        return model(x, ts, r, tq, m)

    out = flow.sample(model_with_times, mask, sequence=sequence, steps=5)
    assert model.calls == 5 + 1  # one per step, and the final prediction of the frames
    # the clock for the structure, 1 for the given sequence; the final prediction just below
    # t_str = 1, which marks a given structure in training
    expected = [(k / 5, 1.0) for k in range(5)] + [(FINAL_STRUCTURE_TIME, 1.0)]
    assert [t for pair in times for t in pair] == pytest.approx([t for pair in expected for t in pair], abs=1e-6)
    assert torch.equal(out.residues[mask], sequence[mask]) and bool((out.residues[~mask] == -1).all())
    assert out.frames.shape == (2, 9, 4, 4) and bool(torch.isfinite(out.frames).all())
    # co-generation with confidence unmasking at low temperature: every real residue generated
    model = CountingModel(logits)
    out = flow.sample(model, mask, steps=4, temperature=0.1, unmasking="confidence")
    assert model.calls == 5 and bool(((out.residues >= 0) & (out.residues < 20))[mask].all())
    with pytest.raises(ValueError, match="structure and sequence are both given"):
        flow.sample(model, mask, structure=atoms, sequence=sequence)
    with pytest.raises(ValueError, match="sequence must have the mask's shape"):
        flow.sample(model, mask, sequence=sequence[:, :5])
    with pytest.raises(ValueError, match=r"structure must be backbone atoms \(B, N, >= 3, 3\)"):
        flow.sample(model, mask, structure=atoms[:, :, :2])
    if torch.cuda.is_available():  # a generator must live where the draws are made
        with pytest.raises(ValueError, match="generator is on cpu but draws for tensors on cuda"):
            flow.sample(model, mask.cuda(), generator=torch.Generator())


def test_sampling_with_the_exact_factorised_posterior_draws_its_marginal():
    """A posterior that ignores the state is the exact posterior of i.i.d. residues with
    probabilities q: inverse folding must then draw every residue from q (chi-square)."""
    from scipy import stats

    flow = CodesignFlow()
    q = torch.softmax(torch.randn(RESIDUE_TYPES, generator=torch.Generator().manual_seed(4), dtype=torch.float64), -1)
    atoms = helix(1, 10, dtype=torch.float32).expand(400, -1, -1, -1)
    mask = torch.ones(400, 10, dtype=torch.bool)
    out = flow.sample(
        CountingModel(torch.log(q)),
        mask,
        structure=atoms,
        steps=10,
        generator=torch.Generator().manual_seed(5),
        dtype_categorical=torch.float64,
    )
    counts = torch.bincount(out.residues.flatten(), minlength=RESIDUE_TYPES).double()
    assert stats.chisquare(counts.numpy(), (4000 * q).numpy()).pvalue > 1e-3


def test_sequence_elbo_of_a_factorised_posterior_is_its_exact_likelihood():
    """For a posterior independent of x_t (i.i.d. residues with probabilities q) the masked ELBO
    is tight: its expectation is -sum_i log q(a_i)."""
    flow = CodesignFlow()
    q = torch.softmax(torch.randn(RESIDUE_TYPES, generator=torch.Generator().manual_seed(6), dtype=torch.float64), -1)
    residues = torch.randint(0, 20, (6, 10), generator=torch.Generator().manual_seed(7))
    residues[0, 0] = UNKNOWN_RESIDUE  # not counted
    mask = torch.ones(6, 10, dtype=torch.bool)
    mask[5, 8:] = False
    est = flow.sequence_elbo(
        CountingModel(torch.log(q)),
        helix(6, 10, dtype=torch.float32),
        residues,
        mask,
        n_draws=300,
        generator=torch.Generator().manual_seed(8),
    )
    counted = mask & (residues >= 0)
    exact = float(-torch.log(q[residues[counted]]).mean())
    assert est.n_tokens == int(counted.sum()) == 57
    assert abs(est.nats_per_token - exact) < 4 * est.stderr_bits_per_token * math.log(2) + 1e-9
