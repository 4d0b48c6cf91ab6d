"""``rdfm earth fit`` / ``rdfm earth sample`` end to end on a small synthetic lat,lon file, the
user's errors as one line with exit code 2, and the library pieces behind them
(:mod:`rfm.sphere_density`, :mod:`rfm.likelihood`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gm.cli import main
from manifolds import Sphere
from rfm.geospatial import parse_latlon_text, xyz_to_latlon
from rfm.likelihood import log_likelihood, solver_settings
from rfm.sphere_density import (
    SphereDensityConfig,
    fit_sphere_density,
    load_sphere_density,
    minimum_points,
)

# A tiny network and few steps: each fit takes a few seconds on one CPU core.
TINY = [
    "--hidden",
    "16",
    "--depth",
    "1",
    "--batch",
    "32",
    "--fourier-features",
    "4",
    "--warmup-steps",
    "2",
    "--val-steps",
    "2",
    "--test-steps",
    "2",
    "--mixed-precision",
    "off",
    "--threads",
    "1",
    "--no-progress",
]
TINY_CONFIG = SphereDensityConfig(
    hidden=16, depth=1, batch=32, fourier_features=4, warmup_steps=2, val_steps=2, test_steps=2, mixed_precision="off"
)


def von_mises_fisher(n: int, mean: np.ndarray, kappa: float, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors of the von Mises-Fisher distribution on S^2 (Wood 1994: the cosine
    to the mean is ``w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa``, the direction around it
    uniform)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    w = 1 + np.log(u + (1 - u) * np.exp(-2 * kappa)) / kappa
    angle = rng.random(n) * 2 * math.pi
    mean = mean / np.linalg.norm(mean)
    e1 = np.cross(mean, [1.0, 0.0, 0.0] if abs(mean[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(mean, e1)
    radial = np.sqrt(np.clip(1 - w**2, 0, None))
    return w[:, None] * mean + radial[:, None] * (np.cos(angle)[:, None] * e1 + np.sin(angle)[:, None] * e2)


def write_latlon(path: Path, xyz: np.ndarray) -> Path:
    latlon = xyz_to_latlon(torch.from_numpy(xyz)).numpy()
    rows = "".join(f"{lat:.5f},{lon:.5f}\n" for lat, lon in latlon)
    path.write_text("# synthetic events: one von Mises-Fisher cluster\nlatitude,longitude\n" + rows)
    return path


@pytest.fixture
def cluster_csv(tmp_path: Path) -> Path:
    return write_latlon(tmp_path / "cluster.csv", von_mises_fisher(300, np.array([1.0, 1.0, 1.0]), kappa=20.0))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_fit_writes_checkpoint_plot_and_results_then_resumes_and_samples(cluster_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["earth", "fit", str(cluster_csv), "--out", str(out), "--steps", "6", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "test NLL" in printed and "uniform: 2.531" in printed
    for name in ("checkpoint.pt", "density.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == 6 and results["budget_steps"] == 6
    assert (results["n_points"], results["n_train"], results["n_val"], results["n_test"]) == (300, 240, 30, 30)
    assert math.isfinite(results["val_nll"]) and math.isfinite(results["test_nll"])
    assert results["nll_unit"] == "nats per point" and results["likelihood_solver"] == solver_settings(2, 2.0)
    assert results["config"]["hidden"] == 16 and results["config"]["fourier_scale"] == 16.0

    # the same command with a larger budget resumes the run
    assert main(["earth", "fit", str(cluster_csv), "--out", str(out), "--steps", "8", "--no-plot", *TINY]) == 0
    assert json.loads((out / "results.json").read_text())["steps"] == 8
    capsys.readouterr()

    # other data in the same folder: refused, with the way out, not a traceback
    other = write_latlon(tmp_path / "other.csv", von_mises_fisher(300, np.array([0.0, 0.0, 1.0]), 5.0, seed=1))
    assert main(["earth", "fit", str(other), "--out", str(out), "--steps", "8", *TINY]) == 2
    err = capsys.readouterr().err
    assert "data: checkpoint" in err and "--restart" in err and "Traceback" not in err

    # samples as lat,lon rows that fit reads back
    samples = tmp_path / "samples.csv"
    assert main(["earth", "sample", "--run", str(out), "--n", "40", "-o", str(samples), "--steps", "4"]) == 0
    assert "wrote 40 samples" in capsys.readouterr().out
    latlon = parse_latlon_text(samples.read_text())
    assert latlon.shape == (40, 2) and np.isfinite(latlon).all()
    again = tmp_path / "again.csv"
    assert main(["earth", "sample", "--run", str(out), "--n", "40", "-o", str(again), "--steps", "4"]) == 0
    assert again.read_text() == samples.read_text()  # seeded


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("lat,lon\n10,20\n30,40\n", "2 points; fitting needs at least 10"),
        ("lat,lon\n10,20\n30,abc\n", "line 3 is not 'latitude,longitude'"),
        ("10,20\n95,40\n", "latitude outside [-90, 90]"),
        ("10,20,30\n", "line 1 is not 'latitude,longitude'"),
    ],
)
def test_fit_refuses_bad_input_with_one_line_and_exit_code_2(content, message, tmp_path, capsys):
    path = tmp_path / "events.csv"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "run"
    assert main(["earth", "fit", str(path), "--out", str(out), "--steps", "2", *TINY]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()  # refused before any work


def test_sample_refuses_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    from gm.train import TrainConfig, train

    args = ["earth", "sample", "--run", str(tmp_path), "-o", str(tmp_path / "s.csv")]
    assert main(args) == 2
    assert "checkpoint.pt: no such file" in one_line_error(capsys)
    # a training checkpoint of another model
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(max_steps=1, progress=False, loss_plot=False, tensorboard=False)
    train(model, lambda m, step, g: m(torch.ones(1, 2)).sum(), config, checkpoint_path=tmp_path / "checkpoint.pt")
    assert main(args) == 2
    assert "not one of a density on the sphere" in one_line_error(capsys)
    assert main([*args, "--n", "0"]) == 2
    assert "--n must be >= 1" in one_line_error(capsys)
    assert not (tmp_path / "s.csv").exists()


def test_fit_sphere_density_library_call_and_its_checks():
    points = torch.from_numpy(von_mises_fisher(100, np.array([0.0, 1.0, 0.0]), 10.0)).float()
    fit = fit_sphere_density(points, TINY_CONFIG, seed=3, max_steps=3, progress=False)
    assert fit.steps == 3 and (fit.n_train, fit.n_val, fit.n_test) == (80, 10, 10)
    assert fit.val_nll is not None and math.isfinite(fit.val_nll)
    assert fit.test_nll == pytest.approx(float(-fit.log_density(points[fit.split[2]]).mean()))
    samples = fit.sample(20, steps=2)
    Sphere(2).check_point(samples)
    with pytest.raises(ValueError, match="9 points are too few"):
        fit_sphere_density(points[:9], TINY_CONFIG, max_steps=1)
    with pytest.raises(ValueError, match="give a training budget"):
        fit_sphere_density(points, TINY_CONFIG)
    with pytest.raises(ValueError, match="off the manifold"):
        fit_sphere_density(2 * points, TINY_CONFIG, max_steps=1)


def test_load_sphere_density_rebuilds_the_network_from_the_checkpoint(tmp_path):
    points = torch.from_numpy(von_mises_fisher(50, np.array([1.0, 0.0, 0.0]), 10.0)).float()
    fit = fit_sphere_density(points, TINY_CONFIG, max_steps=2, checkpoint_path=tmp_path / "c.pt", progress=False)
    model = load_sphere_density(tmp_path / "c.pt")
    x = Sphere(2).random_base(8, generator=torch.Generator().manual_seed(0))
    t = torch.full((8,), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), fit.model(x, t))
    assert not model.training


def test_minimum_points_leaves_every_part_of_the_split_non_empty():
    assert minimum_points() == 10
    assert minimum_points((0.5, 0.25, 0.25)) == 4
    assert minimum_points((0.98, 0.01, 0.01)) == 100
    with pytest.raises(ValueError, match="every fraction must be > 0"):
        minimum_points((0.9, 0.1, 0.0))


def test_exact_likelihood_on_the_data_end_grid_matches_the_closed_form():
    # dz/dt = c (1 - z^2) on S^2 pushes the uniform density towards the north pole:
    # z_t = tanh(atanh(z_0) + c t), p_1(x) = (1 / 4 pi) (1 - z_0^2) / (1 - z_1^2)
    c = 1.5

    def latitude_field(x, t):
        north = torch.zeros_like(x)
        north[..., 2] = 1
        return c * (north - x[..., 2:3] * x)

    sphere = Sphere(2)
    x1 = sphere.random_base(64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z1 = x1[:, 2]
    z0 = torch.tanh(torch.atanh(z1) - c)
    exact = -math.log(4 * math.pi) + torch.log((1 - z0**2) / (1 - z1**2))
    torch.testing.assert_close(log_likelihood(sphere, latitude_field, x1, 32, 2.0), exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_likelihood(sphere, latitude_field, x1, 32, 1.0), exact, atol=1e-6, rtol=0)
    assert solver_settings(32, 2.0) == {
        "method": "rk4",
        "steps": 32,
        "grid_power": 2.0,
        "divergence": "exact",
        "stepping": "project",
    }

    def broken(x, t):
        return torch.full_like(x, math.nan)

    assert torch.isnan(log_likelihood(sphere, broken, x1, 4, 2.0, validate=False)).all()  # model selection
    with pytest.raises(ValueError, match="not finite"):
        log_likelihood(sphere, broken, x1, 4, 2.0)
