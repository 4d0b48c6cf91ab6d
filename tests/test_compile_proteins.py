"""torch.compile and host reads of the protein family (issue #25 items 1 and 2): the backbone and
co-design networks, their training losses (validate=False) and one sampling step compile with
fullgraph=True and zero graph breaks; compiled runs equal eager ones; a training-loss call reads
nothing back from the device and a sampling loop reads back a fixed number of values, whatever
its number of steps. Tiny networks, aot_eager (inductor's C++ compilation is too slow here)."""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest
import torch
from conftest import graph_breaks

from proteins import BackboneFlow, BackboneNetwork, CodesignFlow, CodesignNetwork
from proteins.flow import _FrameSampler, _host_coin

SIZES = dict(node_dim=16, pair_dim=8, heads=2, head_dim=4, query_points=2, value_points=2)


def _mask(b=2, n=10):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, n - 3 :] = False  # padding in the second protein
    return mask


def _data(dtype=torch.float32, seed=1):
    mask = _mask()
    x1 = BackboneFlow().base(mask, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    residues = torch.randint(0, 20, mask.shape, generator=torch.Generator().manual_seed(seed))
    return x1, residues, mask


def test_networks_have_no_graph_breaks():
    torch.manual_seed(0)
    x, residues, mask = _data()
    t = torch.rand(2)
    # each traced once without and once with the self-conditioning input
    net = BackboneNetwork(blocks=2, **SIZES)  # two blocks: the first updates the pair features
    assert graph_breaks(lambda x, t, m: (net(x, t, m), net(x, t, m, x)), x, t, mask) == []
    # the frameflow preset's node transformer (scaled_dot_product_attention with a key mask)
    net = BackboneNetwork(blocks=1, transformer_layers=2, transformer_heads=2, **SIZES)
    assert graph_breaks(lambda x, t, m: net(x, t, m, x), x, t, mask) == []
    codesign = CodesignNetwork(blocks=1, **SIZES)  # the trunk with two blocks is traced above
    ids = residues.masked_fill(residues == 3, 20)  # some masked residues

    def both(x, t, r, m):
        first = codesign(x, t, r, t, m)
        return codesign(x, t, r, t, m, first)

    assert graph_breaks(both, x, t, ids, mask) == []
    # the value check it skips under compile still runs eagerly
    with pytest.raises(ValueError, match=r"residues_t must hold residue types in \[0, 20\]"):
        codesign(x, t, ids.masked_fill(ids == 20, 21), t, mask)


def test_losses_have_no_graph_breaks():
    """validate=False, the self-conditioning decision given (a Python branch: the objective draws
    it on the host), generator=None (torch.compile cannot trace a torch.Generator argument)."""
    torch.manual_seed(0)
    x1, residues, mask = _data()
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES)
    assert graph_breaks(lambda x, m: flow.loss(net, x, m, self_condition=True, validate=False).total, x1, mask) == []
    codesign, cnet = CodesignFlow(), CodesignNetwork(blocks=1, **SIZES)
    # (its self-conditioned network call is traced in test_networks_have_no_graph_breaks)
    assert (
        graph_breaks(
            lambda x, r, m: codesign.loss(cnet, x, r, m, self_condition=False, validate=False).total, x1, residues, mask
        )
        == []
    )


def test_sampling_steps_have_no_graph_breaks():
    torch.manual_seed(0)
    x, residues, mask = _data()
    t, h = torch.tensor(0.3), torch.tensor(0.1)
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES).eval()
    process = _FrameSampler(flow, mask, self_condition=True)
    with torch.no_grad():
        assert graph_breaks(lambda s, t, h: process.advance(s, t, h, net), (x, x), t, h) == []
    # one co-design step: frames on SE(3)^N and the residues' mask CTMC, one model call
    codesign, cnet = CodesignFlow(), CodesignNetwork(blocks=1, **SIZES).eval()
    joint, joint_model = codesign._sampling_process(
        cnet,
        mask,
        structure_given=False,
        sequence_given=False,
        self_condition=True,
        dtype=torch.float32,
        dtype_categorical=torch.float32,
        generator=None,
        temperature=1.0,
        unmasking="random",
        corrector=0.0,
    )
    state = (x, torch.where(mask & (residues < 10), residues, 20))
    with torch.no_grad():
        joint_model.previous = cnet(x, t.expand(2), state[1], t.expand(2), mask)
        assert graph_breaks(lambda s, t, h: joint.advance(s, t, h, joint_model), state, t, h) == []


def test_compiled_network_and_loss_equal_eager_in_float64():
    torch.manual_seed(0)
    x1, _, mask = _data(torch.float64)
    net = BackboneNetwork(blocks=1, **SIZES).double()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    t = torch.rand(2, dtype=torch.float64)
    x_t = BackboneFlow().base(mask, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(compiled(x_t, t, mask, x1), net(x_t, t, mask, x1), rtol=1e-12, atol=1e-12)

    # the whole loss (both network calls: without, then with self-conditioning), its noise drawn
    # by torch's default generator, and its gradients
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES).double()

    def loss(model, x, m):
        return flow.loss(model, x, m, self_condition=True, validate=False)

    compiled_loss = torch.compile(loss, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (loss, compiled_loss):
        torch.manual_seed(7)
        out = fn(net, x1, mask)
        results.append((out, torch.autograd.grad(out.total, list(net.parameters()))))
    (eager, eager_grads), (comp, comp_grads) = results
    for name in ("total", "translation", "rotation", "auxiliary"):
        torch.testing.assert_close(getattr(comp, name), getattr(eager, name), rtol=1e-12, atol=1e-12)
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(isinstance(getattr(eager, name), torch.Tensor) for name in ("translation", "rotation", "auxiliary"))


def test_compiled_sample_lengths_passes_dynamo_recompile_limit(monkeypatch):
    """Many lengths are many batch shapes of one compiled step: sample_lengths raises dynamo's
    recompile limit for the call (fullgraph would otherwise stop with an error past it)."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = BackboneNetwork(node_dim=8, pair_dim=8, blocks=1, heads=2, head_dim=4).eval()
    lengths = np.array([3, 4, 5, 4])  # numpy integers are lengths too
    with torch._dynamo.config.patch(recompile_limit=2):
        out = BackboneFlow().sample_lengths(
            net, lengths, steps=2, compile=True, generator=torch.Generator().manual_seed(1)
        )
        assert torch._dynamo.config.recompile_limit == 2  # restored after the call
    assert [tuple(x.shape) for x in out] == [(3, 4, 4), (4, 4, 4), (5, 4, 4), (4, 4, 4)]
    torch._dynamo.reset()


def test_compiled_sampling_equals_eager(monkeypatch):
    """BackboneFlow.sample(compile=True) compiles one step (gm.compiled_advance); aot_eager here."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch.manual_seed(0)
    mask = _mask(2, 8)
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES).double().eval()
    kwargs = dict(steps=3, dtype=torch.float64, self_condition=False)  # one graph (with it: two)
    eager = flow.sample(net, mask, generator=torch.Generator().manual_seed(0), **kwargs)
    compiled = flow.sample(net, mask, generator=torch.Generator().manual_seed(0), compile=True, **kwargs)
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)


def test_a_training_loss_reads_nothing_back(host_reads):
    torch.manual_seed(0)
    x1, residues, mask = _data()
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES)
    codesign, cnet = CodesignFlow(), CodesignNetwork(blocks=1, **SIZES)
    host_reads.count = 0
    flow.loss(net, x1, mask, self_condition=True, validate=False).total.backward()
    codesign.loss(cnet, x1, residues, mask, self_condition=False, validate=False).total.backward()
    assert host_reads.count == 0, host_reads.where
    # drawing the self-conditioning decision is one read of a draw of the host (CPU) generator,
    # never of a device value (the objective draws it so on accelerators)
    host_reads.count = 0
    flow.loss(net, x1, mask, generator=torch.Generator().manual_seed(0), validate=False)
    lines, first = inspect.getsourcelines(_host_coin)
    assert host_reads.count == 1
    assert host_reads.where[-1].rsplit(":", 1)[0].endswith("proteins/flow.py")
    assert first <= int(host_reads.where[-1].rsplit(":", 1)[1]) < first + len(lines)
    # validate=True: every value check in one read-back
    host_reads.count = 0
    flow.loss(net, x1, mask, t=torch.full((2,), 0.5), self_condition=False)
    codesign.loss(cnet, x1, residues, mask, t=(torch.full((2,), 0.5),) * 2, self_condition=False)
    assert host_reads.count == 2, host_reads.where


def test_loss_checks_given_times_once():
    x1, residues, mask = _data()
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES)
    with pytest.raises(ValueError, match=r"t must be a floating-point tensor of shape \(B,\) = \(2,\)"):
        flow.loss(net, x1, mask, t=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        flow.loss(net, x1, mask, t=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="mask has a protein with no real residue"):
        flow.loss(net, x1, mask & torch.tensor([[True], [False]]))
    flow.loss(net, x1, mask, t=torch.tensor([0.5, 1.0]), validate=False)  # no read-back, no check


def test_sampling_reads_do_not_grow_with_the_steps(host_reads):
    torch.manual_seed(0)
    _, _, mask = _data()
    flow, net = BackboneFlow(), BackboneNetwork(blocks=1, **SIZES).eval()
    codesign, cnet = CodesignFlow(), CodesignNetwork(blocks=1, **SIZES).eval()
    counts = []
    for steps in (2, 6):
        host_reads.count = 0
        flow.sample(net, mask, steps=steps)
        backbone = host_reads.count
        host_reads.count = 0
        codesign.sample(cnet, mask, steps=steps)
        counts.append((backbone, host_reads.count))
    assert counts[0] == counts[1], host_reads.where
    assert counts[0][0] == 1  # the mask's check


# Not traced for coverage (pytest-cov): compiling runs torch's Python compiler stack, which the
# tracer slows down several times, and subprocess runs are not measured anyway; the eager code
# these tests exercise is covered by the other tests.
pytestmark = pytest.mark.no_cover
