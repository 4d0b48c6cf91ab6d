"""Residue types of protein sequences (proteins.data): encode_sequence / decode_residues and the
sequence side of StructureDataset (sample_sequence_crops, residue_types, subset, split).

Oracles: the one-letter alphabet and three-letter names written out here; sample_crops for the
same generator seed; crops located in their chains by their CA coordinates (every CA of the tiny
dataset is unique), whose sequence window is then looked up letter by letter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from proteins.data import (
    AMINO_ACIDS,
    THREE_LETTER_CODES,
    UNKNOWN_RESIDUE,
    StructureDataset,
    decode_residues,
    encode_sequence,
)

AMINO = "ACDEFGHIKLMNPQRSTVWY"
THREE = [
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
]
INDEX = {a: i for i, a in enumerate(AMINO)}

SEQUENCES = [
    "MKTAYIAKQRQISFVKSHFSRQXLEERLGLIEVQ",
    "GSHMWE",
    "ACDEFGHIKLMNPQRSTVWYXXACDEFGHIKLMNPQRSTVWYAAGG",
    "PPGWYQ" * 9,
    "VLSEGEWQLVLHVWAKVEAD",
    "XCDX" * 4,
]
CLUSTERS = [0, 1, 2, 3, 4, 4]


def letters_to_types(sequence: str) -> list[int]:
    return [INDEX.get(a, -1) for a in sequence]


def tiny_dataset() -> StructureDataset:
    """Six chains whose atoms encode (chain, residue, atom), with some O atoms missing (NaN)."""
    lengths = [len(s) for s in SEQUENCES]
    offsets = np.cumsum([0] + lengths)
    atoms = np.zeros((offsets[-1], 4, 3), dtype=np.float32)
    for c, length in enumerate(lengths):
        r = np.arange(length, dtype=np.float32)
        atoms[offsets[c] : offsets[c + 1], :, 0] = 1000.0 * c + r[:, None]
        atoms[offsets[c] : offsets[c + 1], :, 1] = np.arange(4, dtype=np.float32)[None]
        atoms[offsets[c] : offsets[c + 1], :, 2] = c
    atoms[offsets[0] + 3, 3] = np.nan
    atoms[offsets[3] + 10 : offsets[3] + 14, 3] = np.nan
    return StructureDataset(
        atoms,
        offsets,
        SEQUENCES,
        [f"s{c}.pdb" for c in range(len(SEQUENCES))],
        list("ABCDEF"),
        CLUSTERS,
        starts=[1, 5, -2, 1, 1, 30],
    )


def locate(dataset: StructureDataset, ca: torch.Tensor) -> tuple[int, int]:
    """(chain index in ``dataset``, residue index) of the residue whose CA is ``ca``."""
    hits = [
        (i, int(r))
        for i in range(len(dataset))
        for r in torch.nonzero((dataset[i].atoms[:, 1] == ca).all(-1)).flatten()
    ]
    assert len(hits) == 1, ca
    return hits[0]


# ---------------------------------------------------------------------------------------------
# encode / decode


def test_alphabet_and_three_letter_codes():
    assert AMINO_ACIDS == AMINO and list(THREE_LETTER_CODES) == THREE and UNKNOWN_RESIDUE == -1


def test_encode_decode_round_trip_of_all_twenty_letters():
    types = encode_sequence(AMINO)
    assert types.dtype == torch.int64 and types.shape == (20,)
    assert types.tolist() == list(range(20))
    assert decode_residues(torch.arange(20)) == AMINO
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list(AMINO), 200))
    assert encode_sequence(seq).tolist() == letters_to_types(seq)
    assert decode_residues(encode_sequence(seq)) == seq
    assert decode_residues(encode_sequence(seq).to(torch.int32)) == seq  # any integer type
    assert encode_sequence("").shape == (0,) and decode_residues(torch.zeros(0, dtype=torch.long)) == ""


def test_lower_case_is_accepted_and_unknown_letters_become_x():
    assert encode_sequence(AMINO.lower()).tolist() == list(range(20))
    assert torch.equal(encode_sequence("mKtAy"), encode_sequence("MKTAY"))
    for letter in "XBUZOJxbuz":
        assert encode_sequence(letter).tolist() == [UNKNOWN_RESIDUE]
    types = encode_sequence("AXBUZW")
    assert types.tolist() == [0, -1, -1, -1, -1, 18]
    assert decode_residues(types) == "AXXXXW"
    assert decode_residues(torch.tensor([-1, -1, 5])) == "XXG"


@pytest.mark.parametrize("bad", [None, 5, b"ACD", ["A", "C"], "AC-D", "A C", "ACD\n", "A1", "123", "AÉ", "A*"])
def test_encode_rejects_non_strings_and_non_letters(bad):
    with pytest.raises(ValueError, match="sequence must be a string of one-letter residue codes"):
        encode_sequence(bad)


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([0, 20]),
        torch.tensor([-2, 3]),
        torch.tensor([[0, 1], [2, 3]]),
        torch.tensor(3),
        torch.tensor([0.0, 1.0]),
        [0, 1],
        np.array([0, 1]),
    ],
)
def test_decode_rejects_out_of_range_values_and_bad_shapes_or_types(bad):
    with pytest.raises(ValueError, match="residues must be"):
        decode_residues(bad)


# ---------------------------------------------------------------------------------------------
# the dataset's residue types


def test_residue_types_decode_to_each_chains_sequence():
    data = tiny_dataset()
    for i, seq in enumerate(SEQUENCES):
        types = data.residue_types(i)
        assert types.dtype == torch.int64 and types.tolist() == letters_to_types(seq)
        assert decode_residues(types) == seq  # the sequences use X as their only unknown letter
    assert data.residue_types(-1).tolist() == letters_to_types(SEQUENCES[-1])
    with pytest.raises(IndexError):
        data.residue_types(len(SEQUENCES))


def test_sequence_crops_are_the_crops_of_sample_crops_with_their_sequence_windows():
    data = tiny_dataset()
    for seed, (lo, hi) in ((0, (4, 12)), (1, (10, 40)), (2, (1, 60))):
        atoms, mask = data.sample_crops(64, torch.Generator().manual_seed(seed), min_length=lo, max_length=hi)
        s_atoms, residues, s_mask = data.sample_sequence_crops(
            64, torch.Generator().manual_seed(seed), min_length=lo, max_length=hi
        )
        assert torch.equal(s_mask, mask)
        assert torch.equal(torch.isnan(s_atoms), torch.isnan(atoms))
        assert torch.equal(torch.nan_to_num(s_atoms, nan=-7.0), torch.nan_to_num(atoms, nan=-7.0))
        assert residues.dtype == torch.int64 and residues.shape == mask.shape
        chains = set()
        for b in range(len(mask)):
            k = int(mask[b].sum())
            chain, start = locate(data, s_atoms[b, 0, 1])
            chains.add(chain)
            assert start + k <= len(SEQUENCES[chain])
            torch.testing.assert_close(s_atoms[b, :k], data[chain].atoms[start : start + k], equal_nan=True)
            assert residues[b, :k].tolist() == letters_to_types(SEQUENCES[chain][start : start + k])
            assert (residues[b, k:] == UNKNOWN_RESIDUE).all() and (s_atoms[b, k:] == 0).all()
        assert len(chains) >= 5  # the draws cover the chains
    # NaN O atoms are carried into the crops (chain 3 has four)
    seen_nan = False
    for seed in range(20):
        atoms, _, mask = data.sample_sequence_crops(
            8, torch.Generator().manual_seed(seed), min_length=40, max_length=60
        )
        seen_nan |= bool(torch.isnan(atoms[mask]).any())
    assert seen_nan
    with pytest.raises(ValueError, match="max_length"):
        data.sample_sequence_crops(2, None, min_length=5, max_length=4)


def test_subset_and_split_keep_residue_types_aligned_with_their_chains():
    data = tiny_dataset()
    sub = data.subset([3, 0, 5])
    for k, i in enumerate([3, 0, 5]):
        assert sub.sequences[k] == SEQUENCES[i]
        assert sub.residue_types(k).tolist() == letters_to_types(SEQUENCES[i])
        assert torch.equal(torch.nan_to_num(sub[k].atoms), torch.nan_to_num(data[i].atoms))
    # crops of a subset: the window of the located chain (among the subset's chains only)
    atoms, residues, mask = sub.sample_sequence_crops(32, torch.Generator().manual_seed(3), min_length=3, max_length=9)
    for b in range(len(mask)):
        k = int(mask[b].sum())
        chain, start = locate(sub, atoms[b, 0, 1])
        assert residues[b, :k].tolist() == letters_to_types(sub.sequences[chain][start : start + k])
    # a subset of a subset, and negative indices
    subsub = sub.subset([-1, 0])
    assert [decode_residues(subsub.residue_types(k)) for k in range(2)] == [SEQUENCES[5], SEQUENCES[3]]

    train, val, test = data.split(seed=0)
    seen = []
    for part in (train, val, test):
        for k in range(len(part)):
            i = SEQUENCES.index(part.sequences[k])
            seen.append(i)
            assert part.residue_types(k).tolist() == letters_to_types(SEQUENCES[i])
            assert int(part[k].atoms[0, 1, 2]) == i  # the atoms are chain i's (z encodes the chain)
            assert part[k].chain_id == "ABCDEF"[i]
    assert sorted(seen) == list(range(len(SEQUENCES)))


def test_decode_rejects_bool_and_complex_tensors():
    """Boolean indexing would silently pick letters; complex ids are no residue types."""
    with pytest.raises(ValueError, match="residues must be a 1-D integer tensor"):
        decode_residues(torch.ones(21, dtype=torch.bool))
    with pytest.raises(ValueError, match="residues must be a 1-D integer tensor"):
        decode_residues(torch.tensor([1 + 0j, 2 + 0j]))


def test_dataset_names_the_chain_with_a_bad_sequence():
    atoms = np.zeros((4, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="chain 1 has a sequence that is not one-letter residue codes"):
        StructureDataset(atoms, [0, 2, 4], ["AC", "A-"], ["f", "g"], ["A", "B"], [0, 1])
