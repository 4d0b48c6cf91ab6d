"""Discrete sampler speed: rdfm's CTMCSolver vs flow_matching's MixtureDiscreteEulerSolver
(batch 16, length 256, vocab 4096, 32 steps, mask source, the same posterior network).

Peak memory is measured honestly for torch CPU allocations: each sampler runs in a fresh
subprocess and reports the growth of its peak resident set size (``ru_maxrss``) over a
baseline taken after the posterior network was built and warmed up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch
from torch import nn

BATCH, LENGTH, VOCAB, STEPS = 16, 256, 4096, 32


class TokenPosterior(nn.Module):
    """A cheap but nontrivial posterior: token embedding + mean-pooled context -> logits."""

    def __init__(self, vocab: int, width: int = 64, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab + 1, width, generator=g) / width**0.5, requires_grad=False)
        self.out = nn.Parameter(torch.randn(width, vocab, generator=g) / width**0.5, requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.embed[x]
        # t is 0-dim (rdfm) or one time per sequence (flow_matching): both reshape to (-1, 1, 1)
        h = h + h.mean(dim=-2, keepdim=True) + t.to(h.dtype).reshape(-1, 1, 1)
        return h @ self.out


def _run(which: str, quick: bool) -> dict:
    import resource

    from dfm import CTMCSolver, MixturePath

    torch.manual_seed(0)
    net = TokenPosterior(VOCAB)
    x0 = torch.full((BATCH, LENGTH), VOCAB, dtype=torch.long)
    with torch.no_grad():
        net(x0, torch.tensor(0.0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if which == "ours":
        solver = CTMCSolver(MixturePath(VOCAB, "mask"), net)

        def sample():
            return solver.sample(x0, steps=STEPS)
    else:
        from flow_matching.path import MixtureDiscreteProbPath
        from flow_matching.path.scheduler import PolynomialConvexScheduler
        from flow_matching.solver import MixtureDiscreteEulerSolver
        from flow_matching.utils import ModelWrapper

        class Probs(ModelWrapper):
            def forward(self, x, t, **extras):
                return torch.softmax(self.model(x, t), dim=-1)

        solver = MixtureDiscreteEulerSolver(
            model=Probs(net), path=MixtureDiscreteProbPath(PolynomialConvexScheduler(1.0)), vocabulary_size=VOCAB + 1
        )

        def sample():
            return solver.sample(x_init=x0, step_size=1.0 / STEPS)

    times = []
    for _ in range(1 if quick else 3):
        start = time.perf_counter()
        with torch.no_grad():
            out = sample()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": min(times), "peak_rss_growth_mb": (peak - base) / 1024, "masks_left": int((out == VOCAB).sum())}


def run_dfm_speed(quick: bool = False) -> list[dict]:
    """Run both samplers in fresh subprocesses and return one comparison row."""
    results = {}
    for which in ("ours", "theirs"):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.speed_dfm", "--child", which] + (["--quick"] if quick else []),
            capture_output=True,
            text=True,
            check=True,
        )
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, theirs = results["ours"], results["theirs"]
    return [
        dict(
            what=f"CTMC sample, mask source, batch {BATCH}, length {LENGTH}, vocab {VOCAB}, {STEPS} steps",
            ours_s=ours["seconds"],
            theirs_s=theirs["seconds"],
            ratio=theirs["seconds"] / ours["seconds"],
            ours_peak_mb=ours["peak_rss_growth_mb"],
            theirs_peak_mb=theirs["peak_rss_growth_mb"],
            masks_left_ours=ours["masks_left"],
            masks_left_theirs=theirs["masks_left"],
            target=">= 5x",
        )
    ]


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--child":
        print(json.dumps(_run(args[1], "--quick" in args)))
    else:
        for row in run_dfm_speed(quick="--quick" in args):
            print(row)
