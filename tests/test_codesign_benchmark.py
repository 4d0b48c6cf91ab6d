"""The co-design benchmark (benchmarks/codesign.py) end to end on a small real dataset, and the
data and metric helpers it composes.

Oracles: residue counts of the one-letter sequences (collections.Counter) for frequencies,
recovery, perplexity and composition; scipy's jensenshannon and Rotation.align_vectors; the
dihedrals an ideal chain was built with (proteins.frames.ideal_chain); numpy distance counts;
the PDB files the script writes, read back with gemmi."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.spatial.transform import Rotation
from scipy.stats import special_ortho_group

from gm.paths import data_dir

THESEUS = data_dir() / "proteins" / "theseus"
needs_theseus = pytest.mark.skipif(not THESEUS.is_dir(), reason="needs proteins/theseus (set RDFM_DATA_DIR)")

AMINO = "ACDEFGHIKLMNPQRSTVWY"
THREE = dict(
    zip(
        AMINO,
        [
            "ALA",
            "CYS",
            "ASP",
            "GLU",
            "PHE",
            "GLY",
            "HIS",
            "ILE",
            "LYS",
            "LEU",
            "MET",
            "ASN",
            "PRO",
            "GLN",
            "ARG",
            "SER",
            "THR",
            "VAL",
            "TRP",
            "TYR",
        ],
    )
)


@pytest.fixture(scope="module")
def small_dataset(small_structure_set) -> Path:
    """The shared small structure set (conftest), rewritten with every chain in its own
    cluster: with the real clusters the 10 % test split holds a single chain, this way it holds
    two (fewer than the three chains asked for)."""
    with np.load(small_structure_set, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    arrays["cluster"] = np.arange(len(arrays["cluster"]))
    out = small_structure_set.parent / "one_cluster_per_chain.npz"
    np.savez(out, **arrays)
    return out


def _window(dataset, name: str, max_length: int) -> tuple[str, torch.Tensor]:
    """The native sequence and atoms of the held-out crop named ``file:chain:residue number``,
    looked up in ``dataset`` by file name and chain id."""
    file, chain_id, number = name.rsplit(":", 2)
    hits = [
        dataset[i]
        for i in range(len(dataset))
        if Path(dataset[i].source).name == file and dataset[i].chain_id == chain_id
    ]
    assert len(hits) == 1, name
    chain = hits[0]
    offset = int(number) - chain.start
    length = min(len(chain), max_length)
    assert 0 <= offset <= len(chain) - length
    return chain.sequence[offset : offset + length], chain.atoms[offset : offset + length]


def _read_pdb(gemmi, path: Path) -> tuple[list[str], np.ndarray]:
    """Residue names and CA coordinates of the single chain of a PDB file."""
    st = gemmi.read_structure(str(path))
    assert len(st[0]) == 1
    residues = list(st[0][0])
    ca = np.array([[r["CA"][0].pos.x, r["CA"][0].pos.y, r["CA"][0].pos.z] for r in residues])
    return [r.name for r in residues], ca


def _oracle_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """CA RMSD after optimal superposition, from scipy's Wahba solver on centred coordinates."""
    a, b = a - a.mean(0), b - b.mean(0)
    _, rssd = Rotation.align_vectors(a, b)
    return float(rssd) / math.sqrt(len(a))


@needs_theseus
def test_codesign_script_trains_evaluates_and_writes_named_pdbs_and_a_record(small_dataset, tmp_path):
    """The record against counts of the held-out windows (looked up from the chain names it
    lists) and of the training split, and against the PDB files written beside it."""
    gemmi = pytest.importorskip("gemmi")
    from benchmarks.codesign import main
    from proteins.data import StructureDataset

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
        "--eval-chains",
        "3",
        "--seeds",
        "0",
    ]
    from proteins.mpnn import mpnn_available

    assert main(argv + (["--mpnn"] if mpnn_available() else [])) == 0
    record = json.loads((tmp_path / "seed0" / "results.json").read_text())
    assert record["benchmark"] == "codesign" and record["steps"] == 4 and record["seed"] == 0
    if mpnn_available():  # the anchor row: recovery well above chance on real chains
        assert record["recovery"]["ProteinMPNN v_48_020 (T = 0.1)"][0] > 0.2
        assert "may include these held-out chains" in record["table"]
    assert record["config"]["eval_chains"] == 3 and record["max_length"] == 48  # the override and QUICK's cap

    train, _, test = StructureDataset.load(small_dataset).split(seed=0)
    # fewer test chains than asked: held_out_crops takes every one of them, each once
    assert record["n_test_chains"] == len(test) == 2 and record["n_train_chains"] == len(train)
    assert record["n_chains"] == min(3, len(test)) == len(record["chains"]) == len(set(record["chains"]))
    windows = [_window(test, name, record["max_length"]) for name in record["chains"]]
    lengths = [len(seq) for seq, _ in windows]
    assert lengths == sorted(lengths)  # ordered by length
    assert {name.rsplit(":", 2)[0] for name in record["chains"]} == {Path(s).name for s in test.sources}

    # every recovery row in [0, 1]; every perplexity above 1
    labels = {"model, CTMC (T = 1)", "model, purity (T = 0.1)", "model, one-shot argmax", "feature MLP"}
    labels |= {"ProteinMPNN v_48_020 (T = 0.1)"} if mpnn_available() else set()
    most = [label for label in record["recovery"] if label.startswith("most frequent (")]
    assert len(most) == 1 and set(record["recovery"]) == labels | set(most) == set(record["recovery_pooled"])
    for label, (mean, _) in record["recovery"].items():
        assert 0.0 <= mean <= 1.0 and 0.0 <= record["recovery_pooled"][label] <= 1.0, label
    mpnn_rows = {"ProteinMPNN v_48_020 (T = 0.1)"} if mpnn_available() else set()
    assert set(record["perplexity"]) == {"model, CTMC (T = 1)", "feature MLP", most[0]} | mpnn_rows
    for label, (ppl, _) in record["perplexity"].items():
        assert ppl > 1.0 and math.isfinite(ppl), label

    # most frequent baseline: the training split's commonest letter; its recovery is that
    # letter's frequency among the evaluated native residues; its perplexity the unigram one
    train_counts = Counter(a for a in "".join(train.sequences) if a in AMINO)
    train_freq = {a: train_counts[a] / sum(train_counts.values()) for a in AMINO}
    top, top_count = train_counts.most_common(1)[0]
    assert sorted(train_counts.values())[-2] < top_count  # no tie
    assert most[0] == f"most frequent ({top})"
    native = [[a for a in seq if a in AMINO] for seq, _ in windows]
    pooled = [a for seq in native for a in seq]
    assert record["recovery_pooled"][most[0]] == pytest.approx(pooled.count(top) / len(pooled), abs=1e-6)
    per_chain = [seq.count(top) / len(seq) for seq in native]
    assert record["recovery"][most[0]][0] == pytest.approx(np.mean(per_chain), abs=1e-6)
    unigram = float(np.mean([-math.log(train_freq[a]) for a in pooled]))
    assert record["perplexity"][most[0]][0] == pytest.approx(math.exp(unigram), rel=1e-9)
    # composition of the held-out windows, and its JS to the training frequencies (scipy)
    real = np.array([pooled.count(a) / len(pooled) for a in AMINO])
    cogen = record["cogeneration"]
    np.testing.assert_allclose([cogen["real_composition"][a] for a in AMINO], real, atol=1e-12)
    js = jensenshannon(np.array([train_freq[a] for a in AMINO]), real) ** 2
    assert cogen["composition_js_train_vs_test"] == pytest.approx(js, rel=1e-9)

    # folding: TM-scores in (0, 1]; the mean CA RMSD against scipy on the folded PDB files
    folding = record["folding"]
    assert len(folding["per_protein_tm"]) == len(folding["per_protein_baseline_tm"]) == len(windows)
    for tm in folding["per_protein_tm"] + folding["per_protein_baseline_tm"]:
        assert 0.0 < tm <= 1.0
    assert folding["tm"][0] == pytest.approx(np.mean(folding["per_protein_tm"]), rel=1e-9)

    # PDB files: folded (native names), designed (native coordinates), co-generated
    samples = tmp_path / "seed0" / "samples"
    assert len(list(samples.glob("*.pdb"))) == 3 * len(windows)
    rmsds, designed_hits, cogen_letters = [], [], []
    for k, (name, (seq, atoms)) in enumerate(zip(record["chains"], windows)):
        source, chain_id, first = name.rsplit(":", 2)
        tag = f"{source.split('.')[0]}_{chain_id}_{first}"  # file name without its suffixes
        names, folded_ca = _read_pdb(gemmi, samples / f"folded_{k:03d}_{tag}.pdb")
        assert names == [THREE.get(a, "UNK") for a in seq]
        rmsds.append(_oracle_rmsd(atoms[:, 1].double().numpy(), folded_ca))
        names, designed_ca = _read_pdb(gemmi, samples / f"designed_{k:03d}_{tag}.pdb")
        np.testing.assert_allclose(designed_ca, atoms[:, 1].double().numpy(), atol=1e-3, rtol=0)
        assert len(names) == len(seq) and set(names) <= set(THREE.values())
        designed_hits.append([THREE[a] == n for a, n in zip(seq, names) if a in AMINO])
        names, cogen_ca = _read_pdb(gemmi, samples / f"cogen_{k:03d}_len{len(seq)}.pdb")
        assert len(names) == len(cogen_ca) == len(seq) and set(names) <= set(THREE.values()) | {"UNK"}
        cogen_letters += [a for a in AMINO for n in names if THREE[a] == n]
    assert folding["rmsd"][0] == pytest.approx(np.mean(rmsds), abs=2e-3)
    # the designed files hold the purity-sampled sequences: their recovery is the record's
    purity = "model, purity (T = 0.1)"
    hits = [h for chain in designed_hits for h in chain]
    assert record["recovery_pooled"][purity] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert record["recovery"][purity][0] == pytest.approx(np.mean([np.mean(h) for h in designed_hits]), abs=1e-6)
    # the co-generated files hold the sequences whose composition the record reports
    np.testing.assert_allclose(
        [cogen["composition"][a] for a in AMINO],
        [cogen_letters.count(a) / len(cogen_letters) for a in AMINO],
        atol=1e-12,
    )
    assert cogen["composition_js"] == pytest.approx(
        jensenshannon(np.array([cogen_letters.count(a) / len(cogen_letters) for a in AMINO]), real) ** 2, rel=1e-9
    )
    assert "Inverse folding (2 held-out chains" in record["table"]


# ------------------------------------------------------------------------------------------------
# helpers


def _tiny_dataset(sequences: list[str], seed: int = 0):
    """A StructureDataset of ideal random-coil chains with the given sequences, one cluster each."""
    from proteins.data import StructureDataset
    from proteins.frames import ideal_chain

    g = torch.Generator().manual_seed(seed)
    atoms = []
    for seq in sequences:
        phi = (-90.0 + 30 * torch.randn(len(seq), generator=g, dtype=torch.float64)).deg2rad()
        psi = (130.0 + 30 * torch.randn(len(seq), generator=g, dtype=torch.float64)).deg2rad()
        atoms.append(ideal_chain(phi, psi) + 100.0 * len(atoms))
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    return StructureDataset(
        torch.cat(atoms).numpy(),
        offsets,
        sequences,
        [f"f{i}.pdb" for i in range(len(sequences))],
        ["A"] * len(sequences),
        np.arange(len(sequences)),
        starts=[10 * i for i in range(len(sequences))],
    )


def test_propensity_log_odds_of_hand_counted_helix_and_strand_residues():
    """log P(type | helix) / P(type | strand) from counts done by hand, pseudo-count 1 and 0.5;
    coil, unknown and padded residues do not count."""
    from proteins.design_evaluation import propensity_log_odds

    # A A C | X(unknown, helix) | G(coil) | D E (strand) | A (strand, padding)
    residues = torch.tensor([[0, 0, 1, -1, 5, 2, 3, 0]])
    ss = torch.tensor([[1, 1, 1, 1, 0, 2, 2, 2]])
    mask = torch.tensor([[True] * 7 + [False]])
    for pseudo in (1.0, 0.5):
        helix = np.full(20, pseudo)
        helix[0] += 2  # A
        helix[1] += 1  # C
        strand = np.full(20, pseudo)
        strand[2] += 1  # D
        strand[3] += 1  # E
        expected = np.log((helix / (3 + 20 * pseudo)) / (strand / (2 + 20 * pseudo)))
        got = propensity_log_odds(residues, ss, mask, pseudo=pseudo)
        assert got.shape == (20,)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert propensity_log_odds(residues, ss, mask)[0] == pytest.approx(math.log((3 / 23) / (1 / 22)))


def test_js_divergence_matches_scipy_in_nats():
    """scipy's jensenshannon is the square root of the divergence (natural log by default)."""
    from proteins.metrics import js_divergence as _js

    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random(20), rng.random(20)
        p[rng.random(20) < 0.3] = 0.0  # zeros on either side
        q[:3] = 0.0
        p, q = p / p.sum(), q / q.sum()
        assert _js(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-10, abs=1e-15)
        assert _js(p, q) == pytest.approx(_js(q, p), rel=1e-12)
    p = np.array([0.5, 0.5, 0.0, 0.0])
    assert _js(p, p) == 0.0
    assert _js(p, p[::-1].copy()) == pytest.approx(math.log(2))  # disjoint supports
    assert _js(3 * p, p) == 0.0  # weights are normalised
    for bad, message in ((np.ones(3), "same shape"), (-p, "non-negative"), (0 * p, "positive sum")):
        with pytest.raises(ValueError, match=message):
            _js(bad, p)


def test_recovery_counts_known_real_residues_only():
    """Hand-counted matches over real residues of known type, per protein."""
    from proteins.design_evaluation import sequence_recovery as _recovery

    native = torch.tensor([[0, 1, 2, -1, 4, 0], [3, 3, -1, 7, 0, 0], [-1, -1, 0, 0, 0, 0]])
    designed = torch.tensor([[0, 1, 5, -1, 4, 0], [3, 9, 2, 7, 0, 0], [1, 2, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    # row 0: known 0,1,2,4 -> matches 0,1,4 = 3/4 (the -1 = -1 "match" and the padding do not count)
    # row 1: known 3,3,7 -> matches 3,7 = 2/3; row 2: no known residue -> 0
    got = _recovery(designed, native, mask)
    torch.testing.assert_close(got, torch.tensor([3 / 4, 2 / 3, 0.0]))


def test_structure_features_against_the_dihedrals_dssp_and_cb_counts_of_ideal_chains():
    """Ideal chains built from known phi / psi (trans omega): the window's sin/cos are those
    angles (0 where undefined or beyond the chain), an ideal helix is DSSP helix inside, and the
    neighbour counts are numpy counts of CB pairs; padding is zero and changes nothing."""
    from proteins.design_evaluation import structure_features
    from proteins.frames import backbone_dihedrals, beta_carbons, ideal_chain

    g = torch.Generator().manual_seed(3)
    n, short = 16, 11
    phi = (-65.0 + 20 * torch.randn(n, generator=g, dtype=torch.float64)).deg2rad()
    psi = (-40.0 + 20 * torch.randn(n, generator=g, dtype=torch.float64)).deg2rad()
    coil = ideal_chain(phi, psi)
    helix = ideal_chain(
        torch.full((n,), -57.0, dtype=torch.float64).deg2rad(), torch.full((n,), -47.0, dtype=torch.float64).deg2rad()
    )
    atoms = torch.zeros(3, n, 4, 3, dtype=torch.float64)
    atoms[0], atoms[1], atoms[2, :short] = coil, helix, coil[:short]
    mask = torch.zeros(3, n, dtype=torch.bool)
    mask[:2], mask[2, :short] = True, True
    f = structure_features(atoms, mask)
    assert f.shape == (3, n, 25) and f.dtype == torch.float64
    assert (f[2, short:] == 0).all() and torch.isfinite(f).all()

    # the dihedral window of the coil: phi_i from ideal_chain's input (undefined at residue 0),
    # psi_i (undefined at the last), omega = pi
    def block(angle: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.where(defined, torch.sin(angle), 0.0), torch.where(defined, torch.cos(angle), 0.0)])

    idx = torch.arange(n)
    sin_phi, cos_phi = block(phi, idx >= 1)
    sin_psi, cos_psi = block(psi, idx <= n - 2)
    torch.testing.assert_close(f[0, :, 6], sin_phi)
    torch.testing.assert_close(f[0, :, 9], cos_phi)
    torch.testing.assert_close(f[0, :, 7], sin_psi)
    torch.testing.assert_close(f[0, :, 10], cos_psi)
    torch.testing.assert_close(f[0, :-1, 11], torch.full((n - 1,), -1.0, dtype=torch.float64))  # cos(omega = pi)
    # neighbours: residue i-1 in features 0..5, i+1 in 12..17 (zero beyond the ends)
    torch.testing.assert_close(f[0, 1:, 0:6], f[0, :-1, 6:12])
    torch.testing.assert_close(f[0, :-1, 12:18], f[0, 1:, 6:12])
    assert (f[0, 0, 0:6] == 0).all() and (f[0, -1, 12:18] == 0).all()
    # and the same from backbone_dihedrals for the helix
    h_phi, h_psi, h_omega = backbone_dihedrals(helix[None, ..., :3, :])
    trig = torch.cat(
        [torch.sin(torch.stack([h_phi, h_psi, h_omega], -1)), torch.cos(torch.stack([h_phi, h_psi, h_omega], -1))], -1
    )[0].nan_to_num(0.0)
    torch.testing.assert_close(f[1, :, 6:12], trig)

    # DSSP one-hot (coil, helix, strand): one state per residue; the helix interior is helix
    torch.testing.assert_close(f[:2, :, 18:21].sum(-1), torch.ones(2, n, dtype=torch.float64))
    assert (f[1, 2:-2, 19] == 1).all()

    # neighbour counts (features 21..24, divided by 10): numpy counts of CB within 6/8/10/12 A
    for b, length in ((0, n), (1, n), (2, short)):
        cb = beta_carbons(atoms[b, :length]).numpy()
        d = np.linalg.norm(cb[:, None] - cb[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        for j, r in enumerate((6.0, 8.0, 10.0, 12.0)):
            expected = (d < r).sum(1)
            np.testing.assert_allclose(f[b, :length, 21 + j].numpy() * 10, expected, atol=1e-9)
            assert expected.sum() == 2 * np.triu(d < r, 1).sum()  # each pair counted from both ends
    within8 = f[1, :, 22] * 10
    assert within8.max() > within8.min() > 0  # a helix: interior residues have more neighbours
    # padding changes nothing: the padded short chain equals it alone
    alone = structure_features(coil[None, :short], torch.ones(1, short, dtype=torch.bool))
    torch.testing.assert_close(f[2, :short], alone[0])


def test_residue_frequencies_are_letter_counts():
    """Frequencies of the standard letters of every chain (X not counted), float64, sum 1."""
    from proteins.design_evaluation import residue_frequencies

    sequences = ["AAACDXW", "WWYYAX", "GHIKLMNPQRSTV" * 2]
    data = _tiny_dataset(sequences)
    counts = Counter(a for a in "".join(sequences) if a != "X")
    expected = torch.tensor([counts[a] for a in AMINO], dtype=torch.float64) / sum(counts.values())
    got = residue_frequencies(data)
    assert got.dtype == torch.float64 and got.shape == (20,)
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-15)
    sub = data.subset([1])  # a subset counts only its chains
    torch.testing.assert_close(residue_frequencies(sub)[AMINO.index("W")], torch.tensor(2 / 5, dtype=torch.float64))


def test_held_out_crops_take_every_chain_once_when_fewer_exist_sorted_by_length():
    """Asked for more chains than there are: all of them, each a window of its chain (found by
    its CA coordinates), residues that window's letters, padding -1 / zero / masked."""
    from proteins.design_evaluation import held_out_crops

    sequences = ["ACDEFGHIKLMNPQRSTVWYACDEFGHIKLMNPQRSTVWY", "MKV", "WYWYXWYWYWYWYWYWYWYWYWYW"]
    data = _tiny_dataset(sequences, seed=1)
    held = held_out_crops(data, 5, 20, seed=7)
    assert held.atoms.shape == (3, 20, 4, 3) and held.residues.shape == held.mask.shape == (3, 20)
    lengths = held.mask.sum(1).tolist()
    assert lengths == [3, 20, 20]
    chains = []
    for k, name in enumerate(held.names):
        length = lengths[k]
        file, chain_id, number = name.split(":")
        i = int(file[1:].split(".")[0])
        chains.append(i)
        offset = int(number) - 10 * i
        assert chain_id == "A" and 0 <= offset <= len(sequences[i]) - length
        native = data[i].atoms
        torch.testing.assert_close(held.atoms[k, :length], native[offset : offset + length])
        letters = sequences[i][offset : offset + length]
        assert held.residues[k, :length].tolist() == [AMINO.index(a) if a in AMINO else -1 for a in letters]
        assert (held.residues[k, length:] == -1).all() and (held.atoms[k, length:] == 0).all()
        assert held.mask[k, :length].all() and not held.mask[k, length:].any()
    assert sorted(chains) == [0, 1, 2]
    again = held_out_crops(data, 5, 20, seed=7)
    assert again.names == held.names and torch.equal(again.atoms, held.atoms)


# ------------------------------------------------------------------------------------------------
# CA RMSD


def test_ca_rmsd_matches_scipys_optimal_rotation():
    """Random structures with noise: the RMSD equals scipy's rssd / sqrt(n) on centred CA
    coordinates, for backbone atoms and CA traces, with and without masks."""
    from proteins.metrics import ca_rmsd

    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 12 + 7 * trial
        ref = rng.normal(scale=8.0, size=(n, 4, 3))
        rot = special_ortho_group.rvs(3, random_state=trial)
        model = ref @ rot.T + rng.normal(size=3) * 20 + rng.normal(scale=0.3 + trial, size=(n, 4, 3))
        expected = _oracle_rmsd(ref[:, 1], model[:, 1])
        assert expected > 0.1
        assert ca_rmsd(torch.from_numpy(ref), torch.from_numpy(model)) == pytest.approx(expected, rel=1e-9)
        assert ca_rmsd(ref[:, 1], model[:, 1]) == pytest.approx(expected, rel=1e-9)
        assert ca_rmsd(model, ref) == pytest.approx(expected, rel=1e-9)  # symmetric
        # masks: NaN padding on either side is ignored, residue i still paired with residue i
        keep = rng.random(n) < 0.7
        keep[:3] = True
        padded = np.full((n + 4, 4, 3), np.nan)
        padded[:n][keep] = ref[keep]
        ref_mask = torch.zeros(n + 4, dtype=torch.bool)
        ref_mask[:n] = torch.from_numpy(keep)
        got = ca_rmsd(
            torch.from_numpy(padded),
            torch.from_numpy(model),
            reference_mask=ref_mask,
            model_mask=torch.from_numpy(keep),
        )
        assert got == pytest.approx(_oracle_rmsd(ref[keep, 1], model[keep, 1]), rel=1e-9)


def test_ca_rmsd_is_zero_for_a_rigid_copy_and_rejects_unequal_residue_counts():
    from proteins.metrics import ca_rmsd

    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.normal(scale=10.0, size=(30, 4, 3)))
    rot = torch.from_numpy(special_ortho_group.rvs(3, random_state=5))
    moved = ref @ rot.T + torch.tensor([40.0, -13.0, 7.5], dtype=torch.float64)
    assert ca_rmsd(ref, moved) < 1e-10
    with pytest.raises(ValueError, match="equal numbers of real residues"):
        ca_rmsd(ref, moved[:29])
    mask = torch.ones(30, dtype=torch.bool)
    mask[4] = False
    with pytest.raises(ValueError, match="equal numbers of real residues"):
        ca_rmsd(ref, moved, model_mask=mask)
    assert ca_rmsd(ref, moved, reference_mask=mask, model_mask=mask) < 1e-10
