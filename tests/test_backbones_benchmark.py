"""The backbone benchmark end to end on a small real dataset: training, sampling to PDB files,
the metric rows and the record; plus the library pieces it composes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gm.paths import data_dir

THESEUS = data_dir() / "proteins" / "theseus"
needs_theseus = pytest.mark.skipif(not THESEUS.is_dir(), reason="needs proteins/theseus (set RDFM_DATA_DIR)")


@pytest.fixture(scope="module")
def small_dataset(small_structure_set) -> Path:
    return small_structure_set


@needs_theseus
def test_backbones_script_trains_samples_writes_pdbs_and_a_record(small_dataset, tmp_path):
    gemmi = pytest.importorskip("gemmi")
    from benchmarks.backbones import main

    argv = [
        "--quick",
        "--steps",
        "4",
        "--dataset",
        str(small_dataset),
        "--out",
        str(tmp_path),
        "--threads",
        "1",
        "--no-progress",
        "--samples-per-length",
        "2",
        "--seeds",
        "0",
    ]
    assert main(argv) == 0
    record = json.loads((tmp_path / "seed0" / "results.json").read_text())
    assert record["benchmark"] == "backbones" and record["steps"] == 4
    stats = record["statistics"]
    assert set(stats) == {"model", "real (held out)", "untrained network", "random walk"}
    # oracles: the ideal random walk has exact 3.80 A CA-CA steps; real chains nearly all
    assert stats["random walk"]["ca_ca_within_0.1"] == 1.0
    assert stats["real (held out)"]["ca_ca_within_0.1"] > 0.9
    for row in stats.values():
        assert math.isclose(row["helix"] + row["strand"] + row["coil"], 1.0, abs_tol=1e-6)
    assert set(record["floors"]) and "Floors:" in record["table"]
    pdbs = sorted((tmp_path / "seed0" / "samples").glob("*.pdb"))
    assert len(pdbs) == 2
    st = gemmi.read_structure(str(pdbs[0]))
    assert len(st[0]) == 1 and st[0][0].name == "A" and len(st[0][0]) == 40
    assert [a.name for a in st[0][0][0]] == ["N", "CA", "C", "O"]
    for figure in ("ramachandran_model", "ramachandran_random_walk", "rg_vs_length", "ss_composition", "ca_traces"):
        assert (tmp_path / "seed0" / f"{figure}.png").stat().st_size > 1000
    # resuming a finished run evaluates again without training (with ProteinMPNN's proxy, if installed)
    from proteins.mpnn import mpnn_available

    assert main(argv + (["--mpnn", "1"] if mpnn_available() else [])) == 0
    if mpnn_available():
        record = json.loads((tmp_path / "seed0" / "results.json").read_text())
        assert set(record["mpnn"]) == set(stats) and "ProteinMPNN v_48_020 score" in record["table"]
        assert record["mpnn"]["real (held out)"]["composition_entropy_bits"] > 3.0  # real backbones: varied designs


def test_random_walk_baseline_is_ideal_and_seeded():
    from benchmarks.backbones import random_walk

    a, b = random_walk(30, 2, seed=3), random_walk(30, 2, seed=3)
    torch.testing.assert_close(a, b)
    ca = a[..., 1, :]
    assert float(((ca[:, 1:] - ca[:, :-1]).norm(dim=-1) - 3.80).abs().max()) < 0.01


def test_pdb_writer_round_trips_through_gemmi(tmp_path):
    gemmi = pytest.importorskip("gemmi")
    from proteins.frames import ideal_chain
    from proteins.pdb import write_pdb

    atoms = ideal_chain(torch.full((5,), -1.0, dtype=torch.float64), torch.full((5,), -0.8, dtype=torch.float64))
    mask = torch.tensor([True, True, True, True, False])
    path = write_pdb(tmp_path / "x.pdb", atoms, mask, residue_names=["ALA", "GLY", "SER", "LEU"])
    text = path.read_text()
    assert "CRYST1" not in text and text.rstrip().endswith("END")
    st = gemmi.read_structure(str(path))
    chain = st[0]["A"]
    assert [r.name for r in chain] == ["ALA", "GLY", "SER", "LEU"]
    got = torch.tensor([[a.pos.x, a.pos.y, a.pos.z] for r in chain for a in r], dtype=torch.float64)
    torch.testing.assert_close(got, atoms[:4].reshape(-1, 3), atol=6e-4, rtol=0)  # PDB: 3 decimals
    with pytest.raises(ValueError, match="residue_names must be one name or one per real residue"):
        write_pdb(tmp_path / "y.pdb", atoms, mask, residue_names=["ALA"] * 5)
    with pytest.raises(ValueError, match="mask must be a bool tensor of shape"):
        write_pdb(tmp_path / "y.pdb", atoms, torch.ones(4, dtype=torch.bool))
    bad = atoms.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        write_pdb(tmp_path / "y.pdb", bad)
