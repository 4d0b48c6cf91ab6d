"""Tests of the shared benchmark infrastructure: splits, Earth data, results, tables, plots."""

from __future__ import annotations

import io
import json
import math
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks import earth_data, table
from benchmarks.earth_data import (
    EARTH_FILES,
    EXPECTED_ROWS,
    DownloadError,
    download_earth,
    latlon_to_xyz,
    load_earth,
    parse_latlon_text,
    xyz_to_latlon,
)
from benchmarks.results import load_results, new_record, validate_record, write_results
from gm.paths import data_dir
from rfm.splits import split_indices, split_sizes

EARTH_DIR = data_dir() / "earth"
HAVE_EARTH = all((EARTH_DIR / f).is_file() for f in EARTH_FILES.values())
needs_earth = pytest.mark.skipif(
    not HAVE_EARTH,
    reason=f"Earth data not found in {EARTH_DIR} (set RDFM_DATA_DIR or run `python -m benchmarks download`)",
)


# --------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("n", [0, 1, 2, 9, 10, 11, 827, 6120, 4875, 12809])
def test_split_disjoint_complete_and_sized(n):
    train, val, test = split_indices(n, seed=3)
    assert (len(val), len(test)) == (math.floor(n * 0.1 + 1e-9),) * 2
    assert len(train) == n - len(val) - len(test)
    together = torch.cat([train, val, test])
    assert together.dtype == torch.int64
    assert torch.equal(together.sort().values, torch.arange(n))  # disjoint and complete


def test_split_sizes_of_the_earth_datasets():
    assert split_sizes(827) == (663, 82, 82)
    assert split_sizes(12809) == (10249, 1280, 1280)
    assert split_sizes(10, (0.5, 0.3, 0.2)) == (5, 3, 2)  # 0.3 * 10 is 2.9999... in floating point


def test_split_deterministic_and_seed_dependent():
    first = split_indices(100, seed=7)
    again = split_indices(100, seed=7)
    other = split_indices(100, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[2], other[2])
    # Pinned value: a change here means splits (and published numbers) are no longer reproducible.
    assert [t.tolist() for t in split_indices(10, seed=0)] == [[4, 1, 7, 5, 3, 9, 0, 8], [6], [2]]
    # Large and negative seeds are accepted and reproducible.
    assert torch.equal(split_indices(20, seed=-1)[0], split_indices(20, seed=-1)[0])
    assert torch.equal(split_indices(20, seed=2**70)[0], split_indices(20, seed=2**70)[0])


def test_split_is_uniformly_random():
    # Over many seeds, item 0 of n = 10 lands in train / val / test with probability 0.8/0.1/0.1.
    n_seeds = 3000
    counts = np.zeros(3)
    for seed in range(n_seeds):
        part = [0 in s.tolist() for s in split_indices(10, seed)].index(True)
        counts[part] += 1
    assert stats.chisquare(counts, n_seeds * np.array([0.8, 0.1, 0.1])).pvalue > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=-1, seed=0), "n must be >= 0"),
        (dict(n=2.5, seed=0), "n must be an int"),
        (dict(n=10, seed=0.5), "seed must be an int"),
        (dict(n=10, seed=0, fractions=(0.8, 0.1)), "3 entries"),
        (dict(n=10, seed=0, fractions=(0.8, 0.1, 0.2)), "sum to 1"),
        (dict(n=10, seed=0, fractions=(1.2, -0.1, -0.1)), r"\[0, 1\]"),
    ],
)
def test_split_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_indices(**kwargs)


# --------------------------------------------------------------------------------------------
# lat/lon <-> xyz


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_latlon_to_xyz_known_points(dtype):
    latlon = torch.tensor(
        [[0.0, 0.0], [0.0, 90.0], [90.0, 17.0], [-90.0, 0.0], [0.0, 180.0], [45.0, -90.0]], dtype=dtype
    )
    h = math.sqrt(0.5)
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1], [-1, 0, 0], [0, -h, h]], dtype=dtype)
    xyz = latlon_to_xyz(latlon)
    assert xyz.dtype == dtype
    torch.testing.assert_close(xyz, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(latlon_to_xyz(torch.deg2rad(latlon), degrees=False), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.float64, 1e-9)])
def test_latlon_round_trip(dtype, tol):
    generator = torch.Generator().manual_seed(0)
    lat = torch.rand(4, 5, generator=generator, dtype=torch.float64) * 178 - 89
    lon = torch.rand(4, 5, generator=generator, dtype=torch.float64) * 359.8 - 179.9
    latlon = torch.stack((lat, lon), dim=-1).to(dtype)
    xyz = latlon_to_xyz(latlon)
    assert xyz.shape == (4, 5, 3)
    torch.testing.assert_close(xyz.norm(dim=-1), torch.ones(4, 5, dtype=dtype), atol=tol, rtol=0)
    torch.testing.assert_close(xyz_to_latlon(xyz), latlon, atol=tol, rtol=0)
    # Independent oracle for the inverse: asin / atan2 in numpy on the unit vectors.
    x = xyz.double().numpy()
    oracle = np.degrees(np.stack((np.arcsin(np.clip(x[..., 2], -1, 1)), np.arctan2(x[..., 1], x[..., 0])), -1))
    np.testing.assert_allclose(xyz_to_latlon(xyz.double()).numpy(), oracle, atol=1e-6)
    # Only the direction matters.
    torch.testing.assert_close(xyz_to_latlon(3.0 * xyz), latlon, atol=tol, rtol=0)


def test_xyz_to_latlon_poles_and_bad_shapes():
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    assert xyz_to_latlon(poles)[:, 0].tolist() == [90.0, -90.0]
    with pytest.raises(ValueError, match="latlon must have shape"):
        latlon_to_xyz(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="xyz must have shape"):
        xyz_to_latlon(torch.zeros(3, 2))


# --------------------------------------------------------------------------------------------
# parsing and loading


def test_parse_formats():
    quakes = "# source\n# note\n# more\nLATITUDE,LONGITUDE\n31.100,35.500\n-35.683, 35.8\n"
    fire = "# source\n-25.088,152.358\n-30.087,150.998"  # no header, no final newline
    np.testing.assert_array_equal(parse_latlon_text(quakes), [[31.1, 35.5], [-35.683, 35.8]])
    np.testing.assert_array_equal(parse_latlon_text(fire), [[-25.088, 152.358], [-30.087, 150.998]])
    assert parse_latlon_text("# nothing\n").shape == (0, 2)
    with pytest.raises(ValueError, match="line 3 is not 'latitude,longitude'"):
        parse_latlon_text("lat,long\n1,2\n1,abc\n", source="f.csv")
    with pytest.raises(ValueError, match="line 2"):
        parse_latlon_text("lat,long\n1,2,3\n")
    with pytest.raises(ValueError, match="latitude outside"):
        parse_latlon_text("95,0\n")
    with pytest.raises(ValueError, match="non-finite"):
        parse_latlon_text("nan,0\n")


@needs_earth
@pytest.mark.parametrize("name", list(EARTH_FILES))
def test_load_earth_real_data(name):
    xyz = load_earth(name, dtype=torch.float64)
    assert xyz.shape == (EXPECTED_ROWS[name], 3)
    torch.testing.assert_close(xyz.norm(dim=-1), torch.ones(len(xyz), dtype=torch.float64), atol=1e-12, rtol=0)
    # The first row equals the first data line of the file, converted by hand.
    lines = [s for s in (EARTH_DIR / EARTH_FILES[name]).read_text().splitlines() if s and not s.startswith("#")]
    first = lines[0] if lines[0][0] in "-0123456789" else lines[1]
    lat, lon = (math.radians(float(v)) for v in first.split(","))
    expected = [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
    np.testing.assert_allclose(xyz[0].numpy(), expected, atol=1e-12)
    assert load_earth(name, dtype=torch.float32).dtype == torch.float32


@needs_earth
def test_earth_main_reports_row_counts(capsys):
    assert earth_data.main([]) == 0
    out = capsys.readouterr().out
    for name, rows in EXPECTED_ROWS.items():
        assert f"{rows} rows" in out and name in out


def test_missing_data_error_names_file_paths_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("RDFM_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_earth("flood")
    message = str(info.value)
    assert "flood.csv" in message
    assert str(tmp_path / "earth" / "flood.csv") in message
    assert "python -m benchmarks download" in message and "RDFM_DATA_DIR" in message
    with pytest.raises(ValueError, match="name must be one of"):
        load_earth("tsunami")


def test_main_without_data_lists_missing_files(tmp_path, capsys):
    assert earth_data.main(["--dest", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("MISSING") == 4 and "python -m benchmarks download" in out


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fake_files() -> dict[str, bytes]:
    return {
        "volerup.csv": b"# src\nLatitude,Longitude\n-30.2,-178.47\n30.78,130.28\n",
        "quakes_all.csv": b"# a\n# b\n# c\nLATITUDE,LONGITUDE\n31.1,35.5\n",
        "flood.csv": b"# src\nlat,long\n35.8142,5.23026\n",
        "fire.csv": b"# src\n-25.088,152.358\n-6.37,155.393",
    }


def test_download_writes_files_atomically(tmp_path, monkeypatch, capsys):
    files = _fake_files()
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    dest = tmp_path / "new" / "earth"
    paths = download_earth(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(files)  # no temporary files left
    assert requested == [earth_data.DOWNLOAD_BASE_URL + f for f in EARTH_FILES.values()]
    for name, path in paths.items():
        assert path.read_bytes() == files[EARTH_FILES[name]]
    xyz = load_earth("volcano", root=dest, dtype=torch.float64)
    np.testing.assert_allclose(xyz_to_latlon(xyz).numpy(), [[-30.2, -178.47], [30.78, 130.28]], atol=1e-10)
    assert "warning" in capsys.readouterr().err  # the fakes have fewer rows than the real files
    # Existing files are kept unless forced.
    requested.clear()
    download_earth(dest)
    assert requested == []
    download_earth(dest, names=["fire"], force=True)
    assert requested == [earth_data.DOWNLOAD_BASE_URL + "fire.csv"]


def test_download_network_failure_is_a_clean_error(tmp_path, monkeypatch, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as info:
        download_earth(tmp_path)
    message = str(info.value)
    assert earth_data.DOWNLOAD_BASE_URL + "volerup.csv" in message
    assert "Temporary failure in name resolution" in message
    assert str(tmp_path / "volerup.csv") in message
    assert list(tmp_path.iterdir()) == []
    # Through the command line (and its `download` alias): exit code 1 and the message on stderr.
    from benchmarks.__main__ import main as dispatch

    assert dispatch(["download", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download" in err and "Traceback" not in err


def test_download_rejects_invalid_content(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(b"<html>Not Found</html>\n"))
    with pytest.raises(DownloadError, match="did not return a valid lat,lon file"):
        download_earth(tmp_path, names=["flood"])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# results records


def _record(**overrides):
    record = {
        "benchmark": "earth",
        "dataset": "volcano",
        "seed": 0,
        "config": {"lr": 1e-3},
        "budget_minutes": 15.0,
        "steps": 1000,
        "wall_time_s": 900.0,
        "val_nll": -5.0,
        "test_nll": -5.1,
        "likelihood_solver": {"method": "rk4", "steps": 100},
        "git_commit": None,
        "timestamp": "2025-01-01T00:00:00+00:00",
    }
    record.update(overrides)
    return record


def test_write_and_load_results_round_trip(tmp_path):
    record = _record(
        test_nll=np.float32(-5.25), steps=np.int64(7), config={"dtype": torch.float64, "x": torch.tensor(2.0)}
    )
    path = write_results(tmp_path / "a" / "b" / "volcano_0.json", record)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["volcano_0.json"]
    write_results(tmp_path / "c" / "fire_1.json", _record(dataset="fire", seed=1, method="other"))
    (tmp_path / "c" / "config.json").write_text(json.dumps({"lr": 0.1}))  # not a record: skipped
    loaded = load_results(tmp_path)
    assert [r["dataset"] for r in loaded] == ["volcano", "fire"]
    assert loaded[0]["test_nll"] == -5.25 and loaded[0]["steps"] == 7
    assert loaded[0]["config"] == {"dtype": "torch.float64", "x": 2.0}
    assert loaded[0]["method"] == "rfm" and loaded[1]["method"] == "other"
    assert loaded[0]["_path"] == str(path)


def test_write_results_is_atomic(tmp_path, monkeypatch):
    path = write_results(tmp_path / "r.json", _record(test_nll=-1.0))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_results(path, _record(test_nll=-2.0))
    monkeypatch.undo()
    assert json.loads(path.read_text())["test_nll"] == -1.0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(
    "record, match",
    [
        ({"benchmark": "earth", "dataset": "volcano"}, "required field 'seed'"),
        (_record(seed=True), "'seed' must be int"),
        (_record(benchmark="mnist"), "'benchmark' must be one of"),
        (_record(test_nll="low"), "'test_nll' must be"),
        (_record(config=[1]), "'config' must be dict"),
    ],
)
def test_validate_record(record, match):
    with pytest.raises(ValueError, match=match):
        validate_record(record)


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"benchmark": "earth", "dataset": "x"}))
    with pytest.raises(ValueError, match="bad.json: record is missing"):
        load_results(tmp_path)


def test_new_record_fills_provenance():
    record = new_record("so3", "M16", 2, test_loglik=0.5, true_test_loglik=0.9)
    assert record["method"] == "rfm" and record["seed"] == 2 and record["test_loglik"] == 0.5
    assert record["timestamp"].endswith("+00:00")
    assert record["git_commit"] is None or len(record["git_commit"]) >= 40
    assert new_record("proteins", "glycine", 0, method="vonmises")["method"] == "vonmises"


# --------------------------------------------------------------------------------------------
# tables


def test_summarize_matches_numpy():
    values = [-5.0, -5.5, -6.25, -4.0]
    summary = table.summarize(values)
    assert summary.n == 4 and summary.n_nonfinite == 0
    assert summary.mean == pytest.approx(np.mean(values))
    assert summary.std == pytest.approx(np.std(values, ddof=1))
    assert table.summarize([1.0, float("nan"), float("inf")]).format() == "1.00 (n=1, 2 non-finite)"
    assert table.summarize([]).format() == "—"
    assert table.summarize([2.0, 4.0]).format(1, show_n=False) == f"3.0 ± {math.sqrt(2):.1f}"


def _synthetic_records():
    records = []
    for seed, (volcano, fire) in enumerate([(-5.0, -1.0), (-5.5, -1.5), (-6.0, -2.0)]):
        records.append(_record(seed=seed, dataset="volcano", test_nll=volcano))
        records.append(_record(seed=seed, dataset="fire", test_nll=fire, budget_minutes=1.0))
    for seed, (rfm, vm) in enumerate([(1.0, 2.0), (1.2, 2.4)]):
        records.append(_record(benchmark="proteins", dataset="Pre-Pro", seed=seed, test_nll=rfm))
        records.append(_record(benchmark="proteins", dataset="prepro", seed=seed, test_nll=vm, method="vonmises"))
    for seed, (model, truth) in enumerate([(0.5, 1.0), (0.7, 1.1)]):
        records.append(_record(benchmark="so3", dataset="M16", seed=seed, test_loglik=model, true_test_loglik=truth))
    records.append(
        _record(
            benchmark="text", dataset="kjv", seed=0, masked_bpc=2.1234, ar_bpc=1.9, unigram_bpc=4.4, ratio=2.1234 / 1.9
        )
    )
    return records


def test_tables_from_synthetic_records():
    text = table.render_tables(_synthetic_records())
    lines = text.splitlines()
    # Earth: anchors printed, ours = mean ± sample std over 3 seeds; missing datasets marked.
    assert "| RSGM (De Bortoli et al. 2022) | -4.92 | -0.19 | 0.45 | -1.33 |" in lines
    assert "| RFM (Chen & Lipman 2024) | -7.93 | -0.28 | 0.42 | -1.86 |" in lines
    assert "| Riemannian CNF (Mathieu & Nickel 2020) | -6.05 | 0.14 | 1.11 | -0.80 |" in lines
    assert "| ours (rdfm RFM) | -5.50 ± 0.50 (n=3) | — | — | -1.50 ± 0.50 (n=3) |" in lines
    assert "Note: these records mix budgets of [1.0, 15.0] minutes." in lines
    # Proteins: the von Mises anchor and ours on the Pre-Pro column (names normalised).
    assert "| method | General | Glycine | Proline | Pre-Pro |" in lines
    std_vm = np.std([2.0, 2.4], ddof=1)
    assert f"| von Mises mixture (EM, K chosen on validation) | — | — | — | 2.200 ± {std_vm:.3f} (n=2) |" in lines
    assert f"| ours (rdfm RFM) | — | — | — | 1.100 ± {np.std([1.0, 1.2], ddof=1):.3f} (n=2) |" in lines
    # SO(3): RSGM anchor, ours, the true mixture and the per-seed gap (0.5 and 0.4).
    assert "| 16 | ours (rdfm RFM) | 0.89 | 0.60 ± 0.14 (n=2) | 1.05 ± 0.07 (n=2) | 0.45 ± 0.07 (n=2) |" in lines
    # Text: three bpc columns and the ratio.
    assert "| kjv | 0 | 1.900 (n=1) | 2.123 (n=1) | — | — | — | 4.400 (n=1) | 1.118 (n=1) | — |" in lines


def test_table_deduplicates_by_latest_timestamp():
    old = _record(seed=0, test_nll=-1.0, timestamp="2025-01-01T00:00:00+00:00")
    new = _record(seed=0, test_nll=-3.0, timestamp="2025-02-01T00:00:00+00:00")
    kept, notes = table.deduplicate([new, old])
    assert len(kept) == 1 and kept[0]["test_nll"] == -3.0 and len(notes) == 1
    assert "-3.00 (n=1)" in table.render_tables([old, new])


def test_table_main(tmp_path, capsys):
    for i, record in enumerate(_synthetic_records()):
        write_results(tmp_path / "runs" / f"{i}.json", record)
    out_file = tmp_path / "docs" / "tables.md"
    assert table.main(["--runs", str(tmp_path / "runs"), "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert out_file.read_text() == printed and "-5.50 ± 0.50 (n=3)" in printed
    assert table.main(["--runs", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert table.main(["--runs", str(tmp_path / "empty")]) == 1


# --------------------------------------------------------------------------------------------
# plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_earth_writes_png_and_evaluates_the_grid(tmp_path):
    from rfm.geospatial_plots import plot_earth

    generator = torch.Generator().manual_seed(0)
    data = torch.nn.functional.normalize(torch.randn(300, 3, generator=generator, dtype=torch.float64), dim=-1)
    samples = torch.nn.functional.normalize(torch.randn(200, 3, generator=generator, dtype=torch.float64), dim=-1)
    calls = []
    mean_direction = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)

    def von_mises_fisher(points):
        assert not torch.is_grad_enabled()
        calls.append(points.clone())
        kappa = 4.0
        return kappa * points @ mean_direction + math.log(kappa / (4 * math.pi * math.sinh(kappa)))

    path = plot_earth(data, samples, von_mises_fisher, tmp_path / "fig" / "earth.png", "test", n_lat=12, chunk_size=50)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    grid = torch.cat(calls)
    assert max(len(c) for c in calls) <= 50 and grid.shape == (12 * 24, 3) and grid.dtype == torch.float64
    torch.testing.assert_close(grid.norm(dim=-1), torch.ones(len(grid), dtype=torch.float64))
    latitudes = torch.unique(torch.round(xyz_to_latlon(grid)[:, 0], decimals=6))
    np.testing.assert_allclose(latitudes.numpy(), np.linspace(-90 + 7.5, 90 - 7.5, 12), atol=1e-6)
    # Without a density: two panels, still a PNG.
    two = plot_earth(data, samples, None, tmp_path / "two.png")
    assert two.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"data_xyz must have shape \(n, 3\)"):
        plot_earth(data[:, :2], samples, None, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="returned 1 values"):
        plot_earth(data, samples, lambda p: torch.zeros(1), tmp_path / "bad.png", n_lat=4)


def test_config_overrides_replace_only_given_fields():
    import argparse
    from dataclasses import dataclass

    from gm.cli import add_config_overrides, apply_config_overrides

    @dataclass
    class Cfg:
        hidden: int = 256
        lr: float = 1e-3
        fourier_scale: float = 0.0
        time_conditioning: bool = True

    parser = argparse.ArgumentParser()
    add_config_overrides(parser, Cfg())
    args = parser.parse_args(["--lr", "2e-3", "--fourier-scale", "16"])
    assert apply_config_overrides(Cfg(hidden=64), args) == Cfg(hidden=64, lr=2e-3, fourier_scale=16.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden", "1.5"])  # typed like the default
    # bool("false") would be True: booleans are parsed, not cast
    assert apply_config_overrides(Cfg(), parser.parse_args(["--time-conditioning", "false"])).time_conditioning is False
    assert apply_config_overrides(Cfg(), parser.parse_args(["--time-conditioning", "1"])).time_conditioning is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--time-conditioning", "maybe"])


def test_proteins_table_pairs_methods_by_seed():
    from benchmarks.table import proteins_table

    rows = []
    for seed, (vm, ours) in enumerate([(1.30, 1.28), (1.10, 1.11), (1.50, 1.44)]):
        rows.append(_record(benchmark="proteins", dataset="Pre-Pro", seed=seed, method="vonmises", test_nll=vm))
        rows.append(_record(benchmark="proteins", dataset="Pre-Pro", seed=seed, method="rfm", test_nll=ours))
    rows.append(_record(benchmark="proteins", dataset="Pre-Pro", seed=3, method="rfm", test_nll=0.0))  # unpaired
    text = "\n".join(proteins_table(rows))
    diffs = [-0.02, 0.01, -0.06]
    expected = f"{np.mean(diffs):.3f} ± {np.std(diffs, ddof=1):.3f} (2/3 lower)"
    assert expected in text


def test_dataset_rfm_loss_rejects_bad_settings_and_data():
    from manifolds import Sphere
    from rfm.dataset_objective import dataset_rfm_loss

    points = Sphere(2).random_base(3)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        dataset_rfm_loss(Sphere(2), points, 0)
    with pytest.raises(ValueError, match="data_noise must be a number >= 0"):
        dataset_rfm_loss(Sphere(2), points, 4, data_noise=-0.1)
    with pytest.raises(ValueError, match="time_power must be a number > 0"):
        dataset_rfm_loss(Sphere(2), points, 4, time_power=0.0)
    with pytest.raises(ValueError, match=r"x_train: 3 of 3 points off the manifold.*projx\(x_train\)"):
        dataset_rfm_loss(Sphere(2), torch.zeros(3, 3), 4)


def test_dataset_rfm_loss_is_the_library_objective_on_a_random_batch():
    from manifolds import Sphere
    from rfm import RFMObjective
    from rfm.dataset_objective import dataset_rfm_loss
    from rfm.models import velocity_mlp

    sphere = Sphere(2)
    torch.manual_seed(0)
    model = velocity_mlp(sphere, hidden=16, depth=1)
    data = sphere.random_base(50, generator=torch.Generator().manual_seed(1))
    loss = dataset_rfm_loss(sphere, data, 32, time_power=2.0)(model, 0, torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 50, (32,), generator=gen)
    expected = RFMObjective(sphere, time_power=2.0)(model, data[idx], generator=gen)
    assert float(loss) == float(expected)
