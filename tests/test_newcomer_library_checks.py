"""Clear errors a new user met as tracebacks or silence (issue #28, item 8, library side)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from manifolds import SE3, Euclidean
from proteins import backbone_atoms
from rfm import ODESolver, OTCoupling


def test_a_closure_over_a_float32_network_on_float64_points_gets_a_value_error():
    net = nn.Linear(3, 2)
    velocity = lambda x, t: net(torch.cat([x, t.expand(len(x), 1)], -1))  # noqa: E731
    x = torch.randn(4, 2, dtype=torch.float64)
    solver = ODESolver(Euclidean(2), velocity)
    with pytest.raises(ValueError, match=r"failed on points of dtype torch.float64 \(x0's dtype\) with a dtype error"):
        solver.sample(x, steps=2)
    with pytest.raises(ValueError, match=r"failed on points of dtype torch.float64 \(x1's dtype\) with a dtype error"):
        solver.log_likelihood(x, steps=2)

    # a bound method of a module names the parameters' dtype, like the module itself
    class Field(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 2)

        def field(self, x, t):
            return self.net(torch.cat([x, t.expand(len(x), 1)], -1))

    with pytest.raises(ValueError, match="with a model whose parameters are torch.float32"):
        ODESolver(Euclidean(2), Field().field).sample(x, steps=2)
    # a velocity returned in another dtype (e.g. bfloat16 under autocast) is cast, not an error
    assert ODESolver(Euclidean(2), lambda x, t: (-x).float()).sample(x, steps=2).dtype == torch.float64


def test_sinkhorn_without_pot_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ot" else real(name, *a))
    with pytest.raises(
        ImportError,
        match=r'OTCoupling\(method="sinkhorn"\) needs POT, which is not installed: '
        r'pip install "rdfm\[ot\]"',
    ):
        OTCoupling(Euclidean(2), method="sinkhorn")
    OTCoupling(Euclidean(2))  # exact: scipy is there


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backbone_atoms_rejects_frames_that_are_not_rigid(dtype):
    frames = SE3().random_base(2, 6, generator=torch.Generator().manual_seed(0), dtype=dtype)
    frames[..., :3, 3] *= 10.0  # Angstrom-sized translations are fine
    ok = backbone_atoms(frames)
    sheared = frames.clone()
    sheared[1, 2, :3, :3] = sheared[1, 2, :3, :3] @ torch.tensor([[1, 0.2, 0], [0, 1, 0], [0, 0, 1]], dtype=dtype)
    with pytest.raises(ValueError, match=r"frames: 1 of 12 residue frames are not rigid transforms"):
        backbone_atoms(sheared)
    reflected = frames.clone()
    reflected[0, 0, :3, 0] *= -1  # det R = -1
    with pytest.raises(ValueError, match="not rigid transforms"):
        backbone_atoms(reflected)
    nan = frames.clone()
    nan[0, 3, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite values"):
        backbone_atoms(nan)
    # masked residues are not checked (padding may hold anything), and validate=False skips the check
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False
    torch.testing.assert_close(backbone_atoms(sheared, mask)[0], backbone_atoms(frames, mask)[0])
    assert backbone_atoms(sheared, validate=False).shape == ok.shape
    # the rounding of float32 frames built from real atoms passes
    from proteins import frames_from_backbone

    again = frames_from_backbone(ok.to(torch.float32))
    backbone_atoms(again)
