"""Protein dihedral dataset builder and the von Mises mixture anchor."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks.vonmises import VonMisesMixture, fit_vonmises_mixture, select_vonmises_mixture
from proteins import dihedrals as pd
from proteins.data import iter_folder_structures


def test_dihedral_sign_and_value_against_a_constructed_geometry():
    # the dihedral set's angles come from proteins.frames.dihedral (via backbone_dihedrals)
    from proteins.frames import dihedral

    def angle(*points):
        return float(dihedral(*(torch.from_numpy(np.asarray(p, dtype=np.float64)) for p in points)))

    for theta in (-2.5, -0.7, 0.0, 0.7, 3.0):
        p0, p1, p2 = np.array([1.0, 0, 0]), np.zeros(3), np.array([0, 0, 1.5])
        p3 = np.array([2 * math.cos(theta), 2 * math.sin(theta), 1.5])
        assert angle(p0, p1, p2, p3) == pytest.approx(theta)
    # invariant under rigid motions
    q = stats.special_ortho_group.rvs(3, random_state=0)
    pts = [np.array(v) @ q.T + 3.0 for v in ([1.0, 0, 0], [0, 0, 0], [0, 0, 1.5], [0.3, 1.0, 1.5])]
    assert angle(*pts) == pytest.approx(math.atan2(1.0, 0.3))


def _pdb(residues, breaks=()):
    """A synthetic PDB: an ideal-ish zig-zag backbone; a chain break shifts later residues."""
    lines, serial = [], 1
    for i, name in enumerate(residues):
        shift = 10.0 * sum(i >= b for b in breaks)
        base = np.array([3.8 * i + shift, 0.0, 0.0])
        for atom, off in (("N", (0.0, 0.0, 0.0)), ("CA", (1.2, 0.9, 0.3)), ("C", (2.4, 0.2, -0.4))):
            x, y, z = base + np.array(off)
            coordinates = f"{x:8.3f}{y:8.3f}{z:8.3f}"
            lines.append(
                f"ATOM  {serial:5d}  {atom:<3s} {name} A{i + 1:4d}    {coordinates}  1.00  0.00           {atom[0]}"
            )
            serial += 1
    return "\n".join(lines + ["END"]) + "\n"


def test_segments_breaks_classes_and_dedup(tmp_path):
    seq = ["ALA", "GLY", "SER", "PRO", "LEU", "ALA", "PRO", "GLY", "VAL", "ILE", "LYS", "GLU"]
    # consecutive residues 3.8 A apart: C(i) at +2.4, N(i+1) at +3.8 -> 1.4 A peptide bond
    segs = pd.backbone_segments("a.pdb", _pdb(seq))
    assert len(segs) == 1 and segs[0][1].shape == (12, 3, 3)
    assert len(pd.backbone_segments("b.pdb", _pdb(seq, breaks=(5,)))) == 0  # 5 + 7 residues: both < 10
    names = segs[0][0].split("-")
    cls = pd.residue_classes(names)
    # interior residues 1..10: GLY, SER(pre-Pro), PRO, LEU, ALA(pre-Pro), PRO, GLY, VAL, ILE, LYS
    assert cls.tolist() == [1, 3, 2, 0, 3, 2, 1, 0, 0, 0]
    (tmp_path / "x.pdb").write_text(_pdb(seq))
    (tmp_path / "y.pdb").write_text(_pdb(seq))  # duplicate sequence
    (tmp_path / "z.pdb").write_text(
        "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n"
    )
    report = pd.build_dihedral_dataset(iter_folder_structures(tmp_path, pd.DIHEDRAL_FILE_PATTERN), tmp_path / "out.npz")
    assert (report.files, report.unparsed, report.segments_kept, report.segments_duplicate, report.residues) == (
        3,
        1,
        1,
        1,
        10,
    )
    data = np.load(tmp_path / "out.npz")
    assert bool(((data["phi"] >= 0) & (data["phi"] < 2 * np.pi)).all())
    assert data["backbone"].shape == (12, 3, 3)
    phi, psi, _ = pd.segment_dihedrals(segs[0][1])
    np.testing.assert_allclose(np.mod(phi, 2 * np.pi), data["phi"])


def test_vonmises_single_component_matches_scipy_and_is_normalised():
    m = VonMisesMixture(np.array([1.0]), np.array([[1.0, 4.0]]), np.array([[2.0, 0.5]]))
    x = np.array([[0.3, 2.0], [5.0, 6.0]])
    expected = stats.vonmises.logpdf(x[:, 0], 2.0, loc=1.0) + stats.vonmises.logpdf(x[:, 1], 0.5, loc=4.0)
    np.testing.assert_allclose(m.log_prob(x), expected, rtol=1e-10)
    mix = VonMisesMixture(np.array([0.3, 0.7]), np.array([[1.0, 4.0], [3.0, 0.5]]), np.array([[8.0, 3.0], [1.0, 20.0]]))
    g = (np.arange(400) + 0.5) * 2 * np.pi / 400
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    total = np.exp(mix.log_prob(grid)).sum() * (2 * np.pi / 400) ** 2
    assert total == pytest.approx(1.0, abs=1e-6)


def test_em_recovers_a_synthetic_mixture_and_selects_k():
    rng = np.random.default_rng(0)
    truth = VonMisesMixture(
        np.array([0.4, 0.6]), np.array([[1.0, 5.0], [4.0, 2.0]]), np.array([[6.0, 10.0], [15.0, 4.0]])
    )
    x = truth.sample(6000, rng)
    fit = fit_vonmises_mixture(x, 2, seed=1)
    order = np.argsort(fit.weights)
    np.testing.assert_allclose(fit.weights[order], truth.weights, atol=0.03)
    np.testing.assert_allclose(fit.means[order], truth.means, atol=0.08)
    np.testing.assert_allclose(fit.kappas[order], truth.kappas, rtol=0.15)
    x_val = truth.sample(2000, rng)
    _, k, scores = select_vonmises_mixture(x, x_val, ks=(1, 2, 4))
    assert k in (2, 4) and scores[2] > scores[1] + 0.1


def fake_dihedrals(residue_class):
    """300 angles in a 0.3-rad cluster, at a place that depends on the class."""
    gen = torch.Generator().manual_seed(len(residue_class))
    centre = torch.tensor([1.0, 4.0]) if residue_class == "general" else torch.tensor([4.0, 1.0])
    return (centre + 0.3 * torch.randn(300, 2, generator=gen, dtype=torch.float64)) % (2 * math.pi)


def test_joint_class_conditional_run_writes_a_record_per_class(tmp_path, monkeypatch):
    """The joint mode on two synthetic classes (no data files needed): one conditional flow,
    one anchor and one results record per class, the budget shared."""
    import dataclasses
    import json

    from benchmarks import proteins
    from gm.cli import Budget

    monkeypatch.setattr(proteins, "load_dihedrals", fake_dihedrals)
    cfg = dataclasses.replace(proteins.QUICK, eval_every_minutes=0.01)
    # a step budget, not minutes: the result must not depend on how loaded the machine is
    budget = Budget(max_minutes=None, max_steps=150, eval_every=50, eval_every_minutes=None)
    records = proteins.run_joint(
        ["general", "glycine"], 0, budget, cfg, tmp_path, progress=False, plot=False, vonmises_ks=(1, 2)
    )
    assert [r["method"] for r in records] == ["vonmises", "rfm", "vonmises", "rfm"]
    for cls in ("general", "glycine"):
        rec = json.loads((tmp_path / cls / "seed0" / "results.json").read_text())
        assert rec["config"]["joint_classes"] == ["general", "glycine"] and rec["joint_budget_steps"] == 300
        assert math.isfinite(rec["test_nll"]) and rec["n_train"] == 240 and rec["steps"] == 300
        # better than the uniform density (log (2 pi)^2 = 3.68) for a 0.3-rad cluster
        assert rec["test_nll"] < math.log(4 * math.pi**2) - 0.2


@pytest.mark.parametrize("joint", [False, True])
def test_proteins_script_makes_exactly_the_steps_asked_for(tmp_path, monkeypatch, joint):
    """``--steps N``: N steps per class, or N x classes for the one joint model; the records
    say so (and have no time budget: none was given)."""
    import json

    from benchmarks import proteins

    monkeypatch.setattr(proteins, "load_dihedrals", fake_dihedrals)
    argv = [
        "--quick",
        "--steps",
        "6",
        "--classes",
        "general",
        "glycine",
        "--hidden",
        "8",
        "--depth",
        "1",
        "--batch",
        "16",
        "--val-steps",
        "1",
        "--test-steps",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--no-plot",
        "--out",
        str(tmp_path),
    ] + (["--joint"] if joint else [])
    assert proteins.main(argv) == 0
    for cls in ("general", "glycine"):
        rec = json.loads((tmp_path / cls / "seed0" / "results.json").read_text())
        assert rec["budget_steps"] == 6 and "budget_minutes" not in rec
        if joint:
            assert rec["steps"] == 12 and rec["joint_budget_steps"] == 12 and "joint_budget_minutes" not in rec
        else:
            assert rec["steps"] == 6
