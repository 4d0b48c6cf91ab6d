"""rfm.geospatial: lat/lon <-> S^2 and user lat,lon files."""

from __future__ import annotations

import math

import pytest
import torch

from rfm.geospatial import latlon_to_xyz, load_latlon, xyz_to_latlon


def test_known_points_and_round_trip():
    latlon = torch.tensor([[0.0, 0.0], [90.0, 10.0], [0.0, 90.0], [-30.0, -120.0]], dtype=torch.float64)
    xyz = latlon_to_xyz(latlon)
    torch.testing.assert_close(xyz[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(xyz[1], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-15, rtol=0)
    torch.testing.assert_close(xyz[2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-15, rtol=0)
    c = math.cos(math.radians(-30.0))
    expected = [c * math.cos(math.radians(-120.0)), c * math.sin(math.radians(-120.0)), math.sin(math.radians(-30.0))]
    torch.testing.assert_close(xyz[3], torch.tensor(expected, dtype=torch.float64))
    back = xyz_to_latlon(xyz)
    torch.testing.assert_close(back[[0, 2, 3]], latlon[[0, 2, 3]])
    assert float(back[1, 0]) == pytest.approx(90.0)  # the pole's longitude is arbitrary


def test_load_latlon_reads_a_users_file(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("# my events\nlatitude,longitude\n10.5,20\n-45,350\n")
    points = load_latlon(path, dtype=torch.float32)
    assert points.shape == (2, 3) and points.dtype == torch.float32
    torch.testing.assert_close(points.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(
        xyz_to_latlon(points.double()),
        torch.tensor([[10.5, 20.0], [-45.0, -10.0]], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("10,20\n95,0\n")
    with pytest.raises(ValueError, match="latitude outside"):
        load_latlon(bad)
    bad.write_text("10,20\n1;2\n")
    with pytest.raises(ValueError, match="line 2 is not 'latitude,longitude'"):
        load_latlon(bad)
    with pytest.raises(ValueError, match="is not a file"):
        load_latlon(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        load_latlon(path, dtype=torch.int64)
