"""The training-step table of ``python -m benchmarks speed`` (issue #25): for each model family,
the time of one optimisation step at three levels, eager and compiled, with the kernels
(CUDA) or operators (CPU) and the host read-backs of one library step.

- ``bare``: the network's forward on a fixed batch, a mean-squared error (cross entropy for
  text) against a fixed target, backward and AdamW: the arithmetic floor.
- ``library``: the library's loss on a data batch (path draws, times, the model, the loss
  weights: ``RFMObjective``, ``MaskedDiffusionLoss``, ``BackboneFlow.loss``), backward, AdamW.
- ``train``: a step of ``gm.train.train`` with that loss (clipping, the lr schedule, EMA and
  the progress bookkeeping on top), measured between consecutive loss calls.

Compiled rows compile the network (``torch.compile``, ``fullgraph=True``: the trainer's
``TrainConfig(compile=True)``); the optimiser stays eager. Times are medians over steps after
warm-up (and after compilation); on CUDA the clock is read after a synchronisation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gm.profiling import count_host_reads, count_kernels
from gm.train import TrainConfig, train

__all__ = ["STEP_MODELS", "training_step_rows"]


@dataclass
class _Case:
    """One model family at one size: how to build it and its steps."""

    name: str
    build: Callable[[torch.device, int], tuple[nn.Module, Callable, Callable]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _earth(device: torch.device, seed: int):
    from manifolds import Sphere
    from rfm import RFMObjective
    from rfm.models import velocity_mlp

    sphere = Sphere(2)
    torch.manual_seed(seed)
    model = velocity_mlp(sphere, hidden=256, depth=4).to(device)
    g = torch.Generator().manual_seed(seed)
    data = sphere.random_base(4096, generator=g).to(device)
    x, t = sphere.random_base(512, generator=g).to(device), torch.rand(512, generator=g).to(device)
    target = sphere.proju(x, torch.randn(512, 3, generator=g).to(device))
    objective = RFMObjective(sphere, validate=False)

    def bare(m):
        return ((m(x, t) - target) ** 2).sum(-1).mean()

    def library(m, generator):
        batch = data[torch.randint(len(data), (512,), generator=generator).to(device)]
        return objective(m, batch, generator=generator)

    return model, bare, library


def _text(device: torch.device, seed: int):
    from dfm import MaskedDiffusionLoss, MixturePath
    from dfm.transformer import TokenTransformer

    vocab, length, batch = 64, 128, 32
    torch.manual_seed(seed)
    model = TokenTransformer(vocab + 1, vocab, width=128, depth=4, heads=4, max_len=length, time_conditioning=False).to(
        device
    )
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(vocab, (200_000,), generator=g)
    x = torch.randint(vocab + 1, (batch, length), generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    target = torch.randint(vocab, (batch, length), generator=g).to(device)
    loss = MaskedDiffusionLoss(MixturePath(vocab, source="mask"), estimator="count")

    def bare(m):
        return nn.functional.cross_entropy(m(x, t).reshape(-1, vocab), target.reshape(-1))

    def library(m, generator):
        starts = torch.randint(0, len(stream) - length, (batch,), generator=generator)
        crops = stream[starts[:, None] + torch.arange(length)].to(device)
        return loss(m, crops, generator)

    return model, bare, library


def _backbone(node: int, pair: int, blocks: int, batch: int, length: int, heads: int = 8, head_dim: int = 12):
    def build(device: torch.device, seed: int):
        import math

        from proteins import BackboneFlow, BackboneNetwork
        from proteins.frames import ideal_chain

        flow = BackboneFlow()
        torch.manual_seed(seed)
        model = BackboneNetwork(node_dim=node, pair_dim=pair, blocks=blocks, heads=heads, head_dim=head_dim).to(device)
        g = torch.Generator().manual_seed(seed)
        phi = torch.full((batch, length), math.radians(-60.0)) + 0.3 * torch.randn(batch, length, generator=g)
        atoms = ideal_chain(phi, torch.full((batch, length), math.radians(-45.0))).to(device)
        mask = torch.ones(batch, length, dtype=torch.bool, device=device)
        x1 = flow.frames_from_atoms(atoms, mask)
        t = torch.rand(batch, generator=g).to(device)
        x_t = flow.base(mask, generator=g).to(device)
        target = x1

        def bare(m):
            return ((m(x_t, t, mask, None) - target) ** 2).mean()

        def library(m, generator):
            return flow.loss(m, x1, mask, generator=generator).total

        return model, bare, library

    return build


#: The table's models. The defaults: earth, text, backbone and frameflow on CUDA; earth, text and
#: backbone-cpu (a size a CPU steps through in seconds) on the CPU. The IPA sizes are the backbone benchmark's
#: network (node 96, pair 48, 4 blocks) and FrameFlow's (node 256, pair 128, 6 blocks).
STEP_MODELS = {
    "earth": _Case("Earth MLP 256x4, B=512", _earth),
    "text": _Case("masked text transformer 128x4, B=32, L=128", _text),
    "backbone": _Case("backbone IPA 96/48/4, B=32, N=128", _backbone(96, 48, 4, 32, 128)),
    "backbone-cpu": _Case("backbone IPA 96/48/4, B=4, N=64", _backbone(96, 48, 4, 4, 64)),
    "frameflow": _Case("FrameFlow-size IPA 256/128/6, B=16, N=256", _backbone(256, 128, 6, 16, 256, 8, 16)),
}


def _median_step_ms(step: Callable[[], object], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _optimiser_step(model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], opt) -> Callable[[], None]:
    def step():
        loss = loss_of(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _train_step_ms(model: nn.Module, library, device: torch.device, compile: bool, warmup: int, repeats: int) -> float:
    """Median time between consecutive loss calls of ``gm.train.train`` after ``warmup``
    steps (each call waits for the previous step on CUDA, so the interval is one whole step)."""
    stamps: list[float] = []

    def loss_fn(m, step, generator):
        _sync(device)
        stamps.append(time.perf_counter())
        return library(m, generator)

    cfg = TrainConfig(max_steps=warmup + repeats + 1, warmup_steps=1, progress=False, compile=compile)
    train(model, loss_fn, cfg, load_best=False)
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :])]
    return 1000 * statistics.median(gaps)


def training_step_rows(
    device: str = "cpu",
    models: list[str] | None = None,
    modes: tuple[str, ...] = ("eager", "compiled"),
    repeats: int = 10,
    warmup: int = 3,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One row per model and mode: ``model, device, mode, bare_ms, library_ms, train_ms,
    kernels, syncs`` (``kernels``: CUDA kernels, or aten operators on the CPU, of one library
    step; ``syncs``: host read-backs outside torch plus CUDA synchronisations of one library
    step, counted after warm-up)."""
    dev = torch.device(device)
    names = models or (
        ["earth", "text", "backbone", "frameflow"] if dev.type == "cuda" else ["earth", "text", "backbone-cpu"]
    )
    unknown = [k for k in names if k not in STEP_MODELS]
    if unknown:
        raise ValueError(f"models must be among {sorted(STEP_MODELS)}, got {unknown}")
    rows = []
    for key in names:
        case = STEP_MODELS[key]
        for mode in modes:
            compiled = mode == "compiled"
            # each measurement compiles from a clean cache, as a user's process would (graphs cached
            # for an earlier wrapper of the same forward made the trainer's compiled text step 1.5x
            # slower than the same step compiled alone)
            torch._dynamo.reset()
            model, bare, library = case.build(dev, 0)
            net = torch.compile(model, fullgraph=True) if compiled else model
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if dev.type == "cuda" else None)
            log(f"[speed] {case.name}, {mode}: bare step")
            bare_step = _optimiser_step(net, bare, opt)
            for _ in range(warmup):
                bare_step()  # compiles here when compiled
            bare_ms = _median_step_ms(bare_step, dev, repeats)
            g = torch.Generator().manual_seed(1)
            library_step = _optimiser_step(net, lambda m: library(m, g), opt)
            log(f"[speed] {case.name}, {mode}: library step")
            for _ in range(warmup):
                library_step()
            library_ms = _median_step_ms(library_step, dev, repeats)
            kernels = count_kernels(library_step, dev)
            with count_host_reads(cuda=dev.type == "cuda") as reads:
                library_step()
                _sync(dev)
            log(f"[speed] {case.name}, {mode}: trainer step")
            torch._dynamo.reset()
            train_ms = _train_step_ms(model, library, dev, compiled, warmup, repeats)
            rows.append(
                dict(
                    model=case.name,
                    device=dev.type,
                    mode=mode,
                    bare_ms=round(bare_ms, 3),
                    library_ms=round(library_ms, 3),
                    train_ms=round(train_ms, 3),
                    kernels=kernels,
                    syncs=reads.count,
                )
            )
            log(f"[speed] {rows[-1]}")
    return rows


def print_step_table(rows: list[dict]) -> None:
    print("\n| model | device | mode | bare ms | library ms | train ms | kernels/ops per step | host syncs per step |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['device']} | {r['mode']} | {r['bare_ms']:.2f} | {r['library_ms']:.2f} | "
            f"{r['train_ms']:.2f} | {r['kernels']} | {r['syncs']} |"
        )
