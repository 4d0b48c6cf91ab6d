"""torch.compile and host read-backs of the dfm family (issue #25): the token transformer, the
block-diffusion model, the masked-diffusion loss (validate=False) and one CTMC step compile with
fullgraph=True and zero graph breaks; compiled runs equal eager ones; a sampling loop and a
training step read nothing back per step."""

from __future__ import annotations

import pytest
import torch
from conftest import graph_breaks

from dfm import (
    BlockDiffusionTransformer,
    CTMCSolver,
    GuidedPosterior,
    MaskedDiffusionLoss,
    MixtureJumpProcess,
    MixturePath,
)
from dfm.transformer import TokenTransformer
from gm.simulate import simulate

V, L, B = 11, 8, 3


def _transformers(dtype=torch.float32) -> dict[str, TokenTransformer]:
    torch.manual_seed(0)
    size = dict(width=16, depth=1, heads=2, max_len=2 * L)
    return {
        # time and class conditioning (with the null label of classifier-free guidance), rotary
        "labels": TokenTransformer(V + 1, V, num_classes=3, null_label=True, **size).to(dtype),
        # no time input, learned positions, causal: padding masks and key/value caches
        "causal": TokenTransformer(V + 1, V, time_conditioning=False, positions="learned", causal=True, **size).to(
            dtype
        ),
    }


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V + 1, (B, L), generator=g)
    t = torch.rand(B, generator=g, dtype=dtype)
    labels = torch.tensor([0, -1, 2])
    padding = torch.arange(L).expand(B, L) >= torch.tensor([[L], [L - 2], [3]])
    return tokens, t, labels, padding


def test_models_have_no_graph_breaks():
    models = _transformers()
    tokens, t, labels, padding = _inputs()
    causal = models["causal"]
    with torch.no_grad():
        _, cache = causal(tokens, return_kv=True)
    cases = {
        "time + labels": (lambda x, s: models["labels"](x, s, label=labels), tokens, t),
        "time, float t": (lambda x: models["labels"](x, 0.25, label=1), tokens),
        "padding": (lambda x, p: causal(x, padding_mask=p), tokens, padding),
        "attn_mask + position_ids": (
            lambda x: causal(x, attn_mask=torch.ones(L, L, dtype=torch.bool).tril(), position_ids=torch.arange(L)),
            tokens,
        ),
        "past_kv": (lambda x: causal(x, past_kv=cache, return_kv=True), tokens),
    }
    torch.manual_seed(0)
    block = BlockDiffusionTransformer(V, block_size=2, width=16, depth=1, heads=2, max_len=L)  # training mode
    x1 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    cases["block diffusion"] = (block, tokens, x1)
    for name, (fn, *args) in cases.items():
        assert graph_breaks(fn, *args) == [], name
        if name not in ("time + labels", "padding", "block diffusion"):  # compiled in the next test
            # and with fullgraph for real: explain passes over some frames it cannot trace (a Generator)
            torch.compile(fn, fullgraph=True, backend="eager")(*args)


def test_compiled_transformers_equal_eager_in_float64():
    """Outputs and parameter gradients, aot_eager (the graphs torch.compile would lower)."""
    models = _transformers(torch.float64)
    tokens, t, labels, padding = _inputs(torch.float64)
    torch.manual_seed(0)
    block = BlockDiffusionTransformer(V, block_size=2, width=16, depth=1, heads=2, max_len=L).double()
    x1 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    cases = [
        (models["labels"], (tokens, t), {"label": labels}),
        (models["causal"], (tokens,), {"padding_mask": padding}),
        (block, (tokens, x1), {}),
    ]
    for model, args, kwargs in cases:
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        outs, grads = [], []
        for fn in (model, compiled):
            out = fn(*args, **kwargs)
            outs.append(out)
            grads.append(
                torch.autograd.grad(
                    out.square().mean(), [p for p in model.parameters() if p.requires_grad], allow_unused=True
                )
            )
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)
        for a, b in zip(grads[1], grads[0]):
            if a is not None or b is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("block_size,weighting", [(None, "elbo"), (2, "mean")])
def test_masked_loss_compiles_and_equals_eager(block_size, weighting):
    """validate=False: no graph break; the compiled loss draws the same masks from the global RNG
    (aot_eager runs torch's own random ops) and gives the same loss and gradients, float64."""
    path = MixturePath(V)
    loss_fn = MaskedDiffusionLoss(path, weighting=weighting, block_size=block_size, validate=False)
    torch.manual_seed(0)
    model = (
        TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L)
        if block_size is None
        else BlockDiffusionTransformer(V, block_size, width=16, depth=1, heads=2, max_len=L)
    ).double()
    x1 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(3))
    assert graph_breaks(loss_fn, model, x1) == []
    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    losses, grads = [], []
    for fn in (loss_fn, compiled):
        torch.manual_seed(4)
        loss = fn(model, x1)
        losses.append(loss)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_ctmc_step_compiles_and_equals_the_dense_eager_step(monkeypatch):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    t, h = torch.tensor(0.25, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64)
    mask, uniform = MixturePath(V), MixturePath(V, "uniform")
    masked = torch.full((B, L), V)
    tokens = torch.randint(0, V, (B, L), generator=g)
    for options in (dict(unmasking="confidence"), dict(corrector=0.5)):
        assert graph_breaks(MixtureJumpProcess(mask, validate=False, **options).step, masked, t, h, logits) == []
    cases = [
        (mask, masked, {}),
        (mask, masked, dict(unmasking="random_order", top_p=0.9, temperature=0.8)),
        (uniform, tokens, dict(corrector=1.0, top_k=4)),
    ]
    for path, x, options in cases:
        process = MixtureJumpProcess(path, validate="end", **options)  # draws="auto": dense when compiled
        assert graph_breaks(process.step, x, t, h, logits) == [], options
        compiled = torch.compile(
            MixtureJumpProcess(path, validate="end", **options).step, fullgraph=True, backend="aot_eager"
        )
        eager = MixtureJumpProcess(path, validate="end", draws="dense", **options)
        # equal draws need the same random ops: a compiled graph drops a draw it does not use (the
        # uniforms of "confidence" unmasking without a corrector), so that case is not compared
        for last in (False, True):  # the last step is an exact draw: another branch of the same graph
            start = torch.tensor(0.75 if last else 0.25, dtype=torch.float64)
            torch.manual_seed(6)
            got = compiled(x, start, h, logits)
            torch.manual_seed(6)
            assert torch.equal(got, eager.step(x, start, h, logits)), (options, last)

    # the sampler's compile=True: one compiled step reused by every step (aot_eager here, inductor by default)
    real_compile = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda fn, **kw: real_compile(fn, fullgraph=kw["fullgraph"], dynamic=kw["dynamic"], backend="aot_eager"),
    )
    torch.manual_seed(0)
    model = TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L)
    x0 = mask.sample_source((B, L))
    torch.manual_seed(7)
    got = CTMCSolver(mask, model).sample(x0, steps=4, compile=True)
    torch.manual_seed(7)
    with torch.no_grad():
        expected = simulate(MixtureJumpProcess(mask, draws="dense"), lambda x, s: model(x, s.float()), x0, steps=4)
    assert torch.equal(got, expected) and not bool((got == V).any())
    with pytest.raises(ValueError, match="global RNG"):
        CTMCSolver(mask, model).sample(x0, steps=4, compile=True, generator=torch.Generator())


@pytest.mark.parametrize("source,corrector", [("mask", 0.0), ("uniform", 0.5)])
def test_sampler_reads_do_not_grow_with_the_steps(host_reads, source, corrector):
    """x0 and the time grid are checked once, the model (validate=True) is called without its
    per-call checks, the logits are tallied on the device and read back once at the end."""
    path = MixturePath(V, source)
    torch.manual_seed(0)
    model = TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L)
    x0 = path.sample_source((B, L), generator=torch.Generator().manual_seed(8))
    counts = []
    for steps in (2, 12):
        host_reads.count = 0
        CTMCSolver(path, model).sample(x0, steps=steps, corrector=corrector, generator=torch.Generator().manual_seed(9))
        counts.append(host_reads.count)
    assert counts[0] == counts[1], host_reads.where
    # the step itself reads nothing back (a constant corrector, the tally kept for the end)
    process = MixtureJumpProcess(path, corrector, validate="end", draws="dense")
    logits = torch.randn(B, L, V)
    host_reads.count = 0
    for k in range(4):
        x0 = process.step(x0, torch.tensor(k / 5), torch.tensor(0.2), logits)
    assert host_reads.count == 0, host_reads.where


def test_masked_loss_training_step_reads(host_reads):
    """validate=False: nothing read back in loss, backward and optimizer step; validate=True: one
    read for x1 and the model's one for x_t and t."""
    path = MixturePath(V)
    torch.manual_seed(0)
    model = TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x1 = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(10))
    for validate, reads in ((False, 0), (True, 2)):
        loss_fn = MaskedDiffusionLoss(path, validate=validate)
        host_reads.count = 0
        for _ in range(3):
            loss = loss_fn(model, x1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert host_reads.count == 3 * reads, host_reads.where
    with pytest.raises(ValueError, match=r"x1 ids must be in \[0, 11\)"):
        MaskedDiffusionLoss(path)(model, torch.full((B, L), V))


def test_a_bad_posterior_still_raises_naming_the_first_time():
    path = MixturePath(V)

    def posterior(x, t):  # NaN rows from t = 0.5 on
        return torch.zeros(*x.shape, V) + torch.where(t >= 0.5, float("nan"), 0.0)

    x0 = path.sample_source((B, L))
    with pytest.raises(ValueError, match=r"not a distribution: .* first at t = 0\.5\)"):
        CTMCSolver(path, posterior).sample(x0, steps=4)
    assert CTMCSolver(path, posterior).sample(x0, steps=4, validate=False).shape == x0.shape
    logits = torch.full((B, L, V), float("nan"))
    with pytest.raises(ValueError, match="not a distribution"):  # validate=True: in the step itself
        MixtureJumpProcess(path).step(x0, torch.tensor(0.5), torch.tensor(0.5), logits)
    # the posterior's own checks run in its first call: a label the sampler did not make
    model = TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L, num_classes=3, null_label=True)
    with pytest.raises(ValueError, match=r"label values must be in \[0, 3\)"):
        CTMCSolver(path, GuidedPosterior(model, label=3, w=2.0)).sample(x0, steps=4)


def test_inductor_compiled_transformer_equals_eager():
    """The default backend (inductor, C++ on the CPU) on a tiny model, float32."""
    torch.manual_seed(0)
    model = TokenTransformer(V + 1, V, width=16, depth=1, heads=2, max_len=L).eval()
    tokens, t, _, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            torch.compile(model, fullgraph=True)(tokens, t), model(tokens, t), rtol=1e-5, atol=1e-5
        )


# Not traced for coverage (pytest-cov): compiling runs torch's Python compiler stack, which the
# tracer slows down several times, and subprocess runs are not measured anyway; the eager code
# these tests exercise is covered by the other tests.
pytestmark = pytest.mark.no_cover
