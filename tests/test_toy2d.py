"""The toy2d benchmark: its data generators, its energy distance (against scipy in 1-D), and
the quick run end to end (every configuration evaluated, the flow_matching comparison, the
record and the plot written)."""

import json

import pytest
import torch
from scipy.stats import energy_distance as scipy_energy_distance

from benchmarks import toy2d


def test_checkerboard_and_moons():
    g = torch.Generator().manual_seed(0)
    x = toy2d.checkerboard(20000, g)
    assert x.shape == (20000, 2) and bool((x.abs() <= 4).all())
    squares = torch.floor((x + 4) / 2).long()
    assert bool(((squares.sum(-1) % 2) == 0).all())  # only black squares
    counts = torch.bincount(squares[:, 0] * 4 + squares[:, 1], minlength=16)
    assert int((counts > 0).sum()) == 8 and counts[counts > 0].min() > 2000  # all 8, about equally
    m = toy2d.moons(20000, g, noise=0.0) / 2 + torch.tensor([0.5, 0.25])  # back to the unit arcs
    on_upper = ((m.norm(dim=-1) - 1).abs() < 1e-5) & (m[:, 1] >= -1e-6)
    on_lower = (((m - torch.tensor([1.0, 0.5])).norm(dim=-1) - 1).abs() < 1e-5) & (m[:, 1] <= 0.5 + 1e-6)
    assert bool((on_upper | on_lower).all()) and 0.45 < float(on_upper.float().mean()) < 0.55


def test_energy_distance_matches_scipy_in_one_dimension():
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(300, 1, generator=g, dtype=torch.float64),
        torch.randn(200, 1, generator=g, dtype=torch.float64) + 0.5,
    )
    assert toy2d.energy_distance(x, y) == pytest.approx(scipy_energy_distance(x[:, 0], y[:, 0]) ** 2, rel=1e-9)
    assert toy2d.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_quick_run(tmp_path):
    assert toy2d.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    record = json.loads((tmp_path / "checkerboard" / "results.json").read_text())
    assert set(record["configs"]) == set(toy2d.CONFIGS)
    for row in record["configs"].values():
        assert all(v == v for v in (row["test_nll"], row["energy_ode"], row["energy_sde"], row["kinetic"]))
        errors = [row["euler_error"][str(k)] for k in toy2d.EULER_STEPS]
        assert errors == sorted(errors, reverse=True)  # more Euler steps, closer to the converged flow
    fm = record["configs"]["CondOT"]["flow_matching"]
    assert fm["train_step_ratio"] > 0 and fm["sample_ratio"] > 0
    # same init, batches and schedule: flow_matching's model has rdfm's NLL
    assert fm["flow_matching_test_nll"] == pytest.approx(record["configs"]["CondOT"]["test_nll"], abs=0.05)
    assert (tmp_path / "checkerboard" / "toy2d_checkerboard.png").stat().st_size > 10_000
