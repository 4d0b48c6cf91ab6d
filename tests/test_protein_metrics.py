"""Structure metrics of the backbone benchmark (proteins.metrics) and its figures (proteins.plots),
against constructed oracles: ideal chains from proteins.frames.ideal_chain, straight lines,
circles and hand-made TM-score matrices."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import special_ortho_group

from proteins import metrics as M
from proteins import tm_score as tm_search
from proteins.frames import IDEAL, ideal_chain

HELIX = (-57.0, -47.0)
STRAND = (-120.0, 130.0)


def chain(phi_psi, length=None):
    """Ideal backbone (L, 4, 3) float64 from a list of (phi, psi) degrees or one pair repeated."""
    if length is not None:
        phi_psi = [phi_psi] * length
    angles = torch.tensor(phi_psi, dtype=torch.float64).deg2rad()
    return ideal_chain(angles[:, 0], angles[:, 1])


def hairpin(arm=8):
    """Two antiparallel strands (phi, psi = -139, 135) joined by a type II' turn."""
    strand = [(-139.0, 135.0)] * arm
    return chain(strand + [(60.0, -120.0), (-80.0, 0.0)] + strand)


def random_coil(length, seed):
    g = torch.Generator().manual_seed(seed)
    # broad but sterically plausible basins (beta and alpha-R) so the chain does not fold back
    beta = torch.rand(length, generator=g) < 0.5
    phi = torch.where(beta, -120.0, -65.0) + 25 * torch.randn(length, generator=g)
    psi = torch.where(beta, 130.0, -40.0) + 25 * torch.randn(length, generator=g)
    return chain(torch.stack([phi, psi], -1).tolist())


def rigid_motion(x, seed):
    rot = torch.from_numpy(special_ortho_group.rvs(3, random_state=seed)).to(x.dtype)
    return x @ rot.T + torch.tensor([12.0, -7.0, 30.0], dtype=x.dtype)


def pad(structures, length, fill=math.nan):
    """Batch (B, length, 4, 3) with padding filled by ``fill`` and the bool mask."""
    out = torch.full((len(structures), length, 4, 3), fill, dtype=torch.float64)
    mask = torch.zeros(len(structures), length, dtype=torch.bool)
    for b, s in enumerate(structures):
        out[b, : len(s)] = s
        mask[b, : len(s)] = True
    return out, mask


# ---------------------------------------------------------------------------- secondary structure


def test_dssp_calls_an_ideal_helix_helix_and_a_hairpin_strand():
    helix = chain(HELIX, 30)
    codes = M.secondary_structure(helix[None])[0]
    assert codes.dtype == torch.long
    assert (codes[2:-2] == M.SS_HELIX).float().mean() >= 0.9
    ext = M.secondary_structure(chain(STRAND, 30)[None])[0]
    assert not (ext == M.SS_HELIX).any()  # an isolated extended chain has no partner: coil
    assert (ext == M.SS_COIL).all()
    pin = M.secondary_structure(hairpin()[None])[0]
    assert (pin == M.SS_STRAND).sum() >= 10 and not (pin == M.SS_HELIX).any()
    assert (pin[:8] == M.SS_STRAND).sum() >= 5 and (pin[10:] == M.SS_STRAND).sum() >= 5  # both arms


def test_dssp_padding_and_batching_do_not_change_codes():
    helix, pin, short = chain(HELIX, 24), hairpin(), chain(HELIX, 4)
    alone = [M.secondary_structure(s[None])[0] for s in (helix, pin, short)]
    batch, mask = pad([helix, pin, short], 30)
    codes = M.secondary_structure(batch, mask)
    for b, ref in enumerate(alone):
        n = len(ref)
        assert torch.equal(codes[b, :n], ref)
        assert (codes[b, n:] == M.SS_PAD).all()
    assert (alone[2] == M.SS_COIL).all()  # 4 residues cannot hold a helix
    # N, CA, C only: O is rebuilt in the peptide plane; a helix stays a helix
    no_o = M.secondary_structure(batch[:, :, :3], mask)
    assert (no_o[0, 2:22] == M.SS_HELIX).float().mean() >= 0.9


def test_ss_fractions_pooled_and_per_structure():
    codes = torch.tensor([[1, 1, 1, 0, -1, -1], [2, 2, 0, 0, 0, 1]])
    f = M.ss_fractions(codes)
    assert f == pytest.approx({"helix": 4 / 10, "strand": 2 / 10, "coil": 4 / 10})
    per = M.ss_fractions(codes, per_structure=True)
    torch.testing.assert_close(per["helix"], torch.tensor([0.75, 1 / 6], dtype=torch.float64))
    with pytest.raises(ValueError, match="codes"):
        M.ss_fractions(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="codes"):
        M.ss_fractions(torch.zeros(2, 3))


# ---------------------------------------------------------------------------- local geometry


def test_ca_bond_fraction_ideal_and_with_known_breaks():
    x = chain(STRAND, 40)
    dist, valid = M.ca_bond_lengths(x[None])
    assert valid.all() and torch.allclose(dist, torch.full_like(dist, IDEAL.CA_CA), atol=0.02)
    assert M.ca_bond_fraction(x[None]) == 1.0
    # a rigid 10 A shift of everything after a cut changes exactly that one CA-CA distance by
    # more than 6 A (|d + s| >= |s| - |d|), whatever the direction: 3 cuts -> 3 bad bonds
    broken = x.clone()
    for cut, shift in ((5, (10.0, 0, 0)), (17, (0, -10.0, 0)), (30, (0, 0, 10.0))):
        broken[cut:] += torch.tensor(shift, dtype=x.dtype)
    assert M.ca_bond_fraction(broken[None]) == pytest.approx(36 / 39)
    per = M.ca_bond_fraction(torch.stack([x, broken]), per_structure=True)
    torch.testing.assert_close(per, torch.tensor([1.0, 36 / 39], dtype=torch.float64))
    # padding (NaN) and a short second structure: only real consecutive pairs count
    batch, mask = pad([broken, x[:10]], 45)
    assert M.ca_bond_fraction(batch, mask) == pytest.approx((36 + 9) / (39 + 9))


def line(n, spacing=3.8):
    """(n, 4, 3) with CA on the x axis (other atoms copies of CA: only CA is read)."""
    ca = torch.zeros(n, 3, dtype=torch.float64)
    ca[:, 0] = spacing * torch.arange(n, dtype=torch.float64)
    return ca[:, None, :].repeat(1, 4, 1)


def test_clash_rate_counts_exactly_the_constructed_close_pairs():
    n = 30
    x = line(n)
    assert M.clash_rate(x[None]) == 0.0
    # move residue q 2 A off residue p: one clash each (3.8 A line neighbours stay >= 4.29 A away)
    for p, q in ((2, 20), (6, 25), (11, 28)):
        x[q] = x[p] + torch.tensor([0.0, 2.0, 0.0], dtype=x.dtype)
    clashes, pairs = M.clash_counts(x[None])
    assert clashes.tolist() == [3] and pairs.tolist() == [(n - 1) * (n - 2) // 2]
    assert M.clash_rate(x[None]) == pytest.approx(3 / ((n - 1) * (n - 2) / 2))
    # with a 4 A threshold and separation 1 the 3.8 A bonds count too (those not broken above)
    bonds = sum(1 for i in range(n - 1) if abs(float((x[i + 1, 1] - x[i, 1]).norm()) - 3.8) < 1e-9)
    assert M.clash_counts(x[None], threshold=4.0, min_separation=1)[0].item() == 3 + bonds
    # padding stacked on top of real residues is ignored
    batch, mask = pad([x, line(12)], 40, fill=0.0)
    assert M.clash_counts(batch, mask)[0].tolist() == [3, 0]
    torch.testing.assert_close(
        M.clash_rate(batch, mask, per_structure=True), torch.tensor([3 / 406, 0.0], dtype=torch.float64)
    )


def test_radius_of_gyration_of_points_on_a_circle():
    r, n = 7.5, 24
    t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    ca = torch.stack([r * t.cos() + 3.0, r * t.sin() - 1.0, torch.full_like(t, 2.0)], -1)
    x = ca[:, None, :].repeat(1, 4, 1)
    batch, mask = pad([x, line(5)], 30)
    rg = M.radius_of_gyration(batch, mask)
    # the 5 points 0, 3.8, ..., 15.2 on a line: Rg = 3.8 * sqrt(mean((k - 2)^2)) = 3.8 * sqrt(2)
    torch.testing.assert_close(rg, torch.tensor([r, 3.8 * math.sqrt(2.0)], dtype=torch.float64))
    assert M.radius_of_gyration(x[None].float()).dtype == torch.float32


# ---------------------------------------------------------------------------- distributions


def test_phi_psi_recovers_the_helix_dihedrals_and_skips_undefined():
    batch, mask = pad([chain(HELIX, 20), chain(STRAND, 12)], 25)
    angles = M.phi_psi(batch, mask)
    assert angles.shape == (18 + 10, 2)
    torch.testing.assert_close(angles[:18], torch.tensor(HELIX, dtype=torch.float64).deg2rad().expand(18, 2))
    torch.testing.assert_close(angles[18:], torch.tensor(STRAND, dtype=torch.float64).deg2rad().expand(10, 2))


def test_ramachandran_js_identical_disjoint_and_against_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(-math.pi, math.pi, size=(500, 2))
    assert M.ramachandran_js(a, a.copy()) == pytest.approx(0.0, abs=1e-12)
    helix = np.tile(np.deg2rad(HELIX), (50, 1))
    strand = np.tile(np.deg2rad(STRAND), (80, 1))
    assert M.ramachandran_js(helix, strand) == pytest.approx(math.log(2.0))
    b = np.concatenate([rng.normal(-1.0, 0.4, (300, 2)), a[:200]])
    b = np.mod(b + math.pi, 2 * math.pi) - math.pi
    p, q = M.ramachandran_histogram(a, 18), M.ramachandran_histogram(b, 18)
    assert p.sum() == pytest.approx(1.0)
    expected = jensenshannon(p.ravel(), q.ravel()) ** 2  # scipy: natural log, square root of JS
    assert M.ramachandran_js(a, b, bins=18) == pytest.approx(expected, rel=1e-9)
    # the torus wraps: psi = pi and psi = -pi fall into the same cell
    assert M.ramachandran_js(np.array([[0.1, math.pi]]), np.array([[0.1, -math.pi]])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="phi_psi_a"):
        M.ramachandran_js(np.zeros((0, 2)), a)
    with pytest.raises(ValueError, match="angles"):
        M.ramachandran_js(np.zeros((5, 3)), a)


def test_ca_distance_wasserstein_equals_the_shift_and_ignores_padding():
    a = line(20, 3.8)[None]
    b_batch, b_mask = pad([line(20, 3.9), line(9, 3.9)], 26)
    w = M.ca_distance_wasserstein(a, None, b_batch, b_mask, ks=(2, 3, 5))
    # every CA(i, i+k) distance is k * spacing: the distributions differ by the shift 0.1 k
    assert w == pytest.approx({2: 0.2, 3: 0.3, 5: 0.5})
    helix = chain(HELIX, 30)[None]
    assert M.ca_distance_wasserstein(helix, None, helix.clone(), None)[4] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------- TM-score


def test_threading_bounds_match_brute_force_superpositions():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=(30, 3)) * 2.2, 0)
    y = np.cumsum(rng.normal(size=(41, 3)) * 2.2, 0)
    bound, shifts = tm_search._threading_bounds(x, y[None], np.ones((1, 41), dtype=bool), 30, 5)
    d0 = M.tm_d0(30)
    for k in (0, 9, 29, 40, 55, len(shifts) - 5):
        i, j = tm_search._threading_pairs(30, 41, int(shifts[k]))
        rot, t = tm_search._kabsch(x[i], y[j], np.ones(len(i)))
        msd = ((y[j] @ rot.T + t - x[i]) ** 2).sum(-1).mean()
        expected = (len(i) / 30) / (1 + msd / d0**2) if len(i) >= 5 else 0.0
        assert bound[0, k] == pytest.approx(expected, rel=1e-7, abs=1e-12)


@pytest.fixture(params=["tm-align", "heuristic"])
def tm_backend(request, monkeypatch):
    """The alignment search without correspondence: TM-align (tmtools) or, as without tmtools,
    rdfm's heuristic (biotite's structural alignment and threadings)."""
    if request.param == "tm-align":
        pytest.importorskip("tmtools")
    else:
        monkeypatch.setattr(tm_search, "_tm_align", lambda: None)
    return request.param


def test_tm_score_is_one_under_rigid_motions_and_low_for_unrelated_chains(tm_backend):
    x = random_coil(60, seed=3)
    for seed in range(3):
        y = rigid_motion(x, seed)
        assert M.tm_score(x, y, aligned=True) == pytest.approx(1.0, abs=1e-9)
        assert M.tm_score(x, y) == pytest.approx(1.0, abs=1e-9)
    assert M.tm_score(x[:, 1], rigid_motion(x, 5)[:, 1]) == pytest.approx(1.0, abs=1e-9)  # CA traces
    helix = chain(HELIX, 60)
    assert M.tm_score(helix, x) < 0.3 and M.tm_score(x, helix) < 0.3
    assert M.tm_score(helix, x, aligned=True) < 0.3


def test_tm_score_search_finds_a_partial_superposition():
    # the last third of the model is moved 100 A away: the best superposition fits the first
    # 40 residues exactly, TM = (40 + 20 / (1 + (100 / d0)^2)) / 60 (up to the far residues'
    # small exact distances); least squares on all residues would give far less
    x = random_coil(60, seed=4)
    y = x.clone()
    y[40:] += torch.tensor([100.0, 0.0, 0.0], dtype=x.dtype)
    y = rigid_motion(y, 1)
    tm = M.tm_score(x, y, aligned=True)
    assert 40 / 60 <= tm < 40 / 60 + 20 / 60 / (1 + (90 / M.tm_d0(60)) ** 2)


def test_tm_score_of_a_crop_against_its_whole_chain(tm_backend):
    whole = random_coil(90, seed=6)
    crop = rigid_motion(whole[25:75], 2)
    assert M.tm_score(crop, whole) == pytest.approx(1.0, abs=1e-6)  # normalised by the crop
    assert 0.4 < M.tm_score(whole, crop) < 50 / 90 + 1e-6  # normalised by the whole chain
    with pytest.raises(ValueError, match="aligned=True"):
        M.tm_score(crop, whole, aligned=True)


def test_tm_score_masks_and_validation(tm_backend):
    x, y = random_coil(40, seed=7), random_coil(40, seed=8)
    plain = M.tm_score(x, y)
    batch, mask = pad([x, y], 48)
    assert M.tm_score(batch[0], batch[1], reference_mask=mask[0], model_mask=mask[1]) == pytest.approx(plain)
    assert M.pairwise_tm(batch, mask)[0, 1].item() == pytest.approx(plain)
    with pytest.raises(ValueError, match="reference"):
        M.tm_score(batch[0], y)  # NaN padding without a mask
    with pytest.raises(ValueError, match="mask"):
        M.tm_score(x, y, model_mask=torch.ones(40))
    with pytest.raises(ValueError, match="model"):
        M.tm_score(x, torch.zeros(40, 4, 2))


def test_pairwise_max_tm_diversity_and_novelty(tm_backend):
    helix, coil_a, coil_b = chain(HELIX, 48), random_coil(48, seed=11), random_coil(56, seed=12)
    samples = [helix, rigid_motion(helix, 3), coil_a, coil_b]
    tm = M.pairwise_tm(samples)
    assert tm.shape == (4, 4) and torch.allclose(tm.diagonal(), torch.ones(4, dtype=torch.float64))
    assert tm[0, 1] == pytest.approx(1.0, abs=1e-9) and tm[1, 0] == pytest.approx(1.0, abs=1e-9)
    assert (tm[:2, 2:] < 0.5).all() and (tm[2:, :2] < 0.5).all() and tm[2, 3] < 0.5
    div = M.diversity(samples, tm=tm)
    assert div["clusters_at_0_5"] == 3 and div["greedy_clusters_at_0_5"] == 3 and div["n"] == 4
    sym = 0.5 * (tm + tm.T)
    assert div["mean_pairwise_tm"] == pytest.approx(float(sym[torch.triu_indices(4, 4, 1).unbind()].mean()))

    training = [coil_b, random_coil(70, seed=13), rigid_motion(coil_a, 8)[5:45], chain(STRAND, 50)]
    queries = [coil_a[5:45], helix]
    full, index = M.max_tm_to(training, queries)
    assert full[0] == pytest.approx(1.0, abs=1e-6) and index[0] == 2 and full[1] < 0.5
    pre, pre_index = M.max_tm_to(training, queries, top_k=1)  # threading prefilter keeps the copy
    assert pre[0] == pytest.approx(1.0, abs=1e-6) and pre_index[0] == 2 and (pre <= full + 1e-12).all()
    nov = M.novelty(queries, training)
    assert nov["memorised"] == 1 and nov["mean_max_tm"] == pytest.approx(float(full.mean()))


def _theseus_chains():
    import os
    from pathlib import Path

    from proteins.data import read_backbone_chains

    root = Path(os.environ.get("RDFM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    theseus = root / "proteins" / "theseus"
    if not theseus.is_dir():
        pytest.skip("needs proteins/theseus (set RDFM_DATA_DIR)")
    files = [*sorted(theseus.glob("*.pdb.gz")), *sorted((theseus / "cytochromes").glob("*.pdb.gz"))[:3]]
    files += sorted((theseus / "trypsins").glob("*.pdb*"))[:2]
    return [read_backbone_chains(path)[0].atoms.astype(np.float64) for path in files]


def test_tm_align_rescored_by_the_superposition_search_and_the_heuristic_against_it():
    """Real domains (3 unrelated, 3 cytochromes c, 2 trypsins; 67-244 residues), all 28 pairs.
    Oracle for our TM-score definition: TM-align's own alignment (tmtools), rescored by our
    superposition search on that correspondence, gives TM-align's score. Wiring: tm_score and
    pairwise_tm return TM-align's two normalisations. The heuristic fallback: within 0.03 of
    TM-align on similar pairs (TM-align > 0.5), never above it by more than 0.01, and lower on
    dissimilar ones (measured: by up to about 0.15)."""
    tmtools = pytest.importorskip("tmtools")
    chains = _theseus_chains()
    ca = [c[:, 1].copy() for c in chains]
    tm = M.pairwise_tm(chains)
    gaps = []
    for a in range(len(chains)):
        for b in range(a + 1, len(chains)):
            n, m = len(ca[a]), len(ca[b])
            result = tmtools.tm_align(ca[a], ca[b], "A" * n, "A" * m)
            # the aligned residue pairs from TM-align's gapped strings (pairs within its cutoff
            # and beyond: every aligned column counts in the TM-score sum)
            columns = [(x != "-", y != "-") for x, y in zip(result.seqxA, result.seqyA)]
            i = np.cumsum([cx for cx, _ in columns]) - 1
            j = np.cumsum([cy for _, cy in columns]) - 1
            both = np.array([cx and cy for cx, cy in columns])
            rescored = tm_search._tm_on_pairs(ca[a][i[both]], ca[b][j[both]], n, 4)
            assert rescored == pytest.approx(result.tm_norm_chain1, abs=3e-3)
            assert float(tm[a, b]) == pytest.approx(result.tm_norm_chain1, abs=1e-9)
            assert float(tm[b, a]) == pytest.approx(result.tm_norm_chain2, abs=1e-9)
            assert M.tm_score(chains[a], chains[b]) == pytest.approx(result.tm_norm_chain1, abs=1e-9)
            heuristic = tm_search._heuristic_scores(chains[a], chains[b], both=False)[0]
            assert heuristic <= result.tm_norm_chain1 + 0.01
            if result.tm_norm_chain1 > 0.5:
                assert heuristic >= result.tm_norm_chain1 - 0.03
            gaps.append(result.tm_norm_chain1 - heuristic)
    assert max(gaps) > 0.05  # the heuristic's known shortfall on dissimilar pairs is real


def test_without_tmtools_the_fallback_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tmtools", None)  # import fails as if not installed
    with pytest.warns(UserWarning, match="tmtools is not installed"):
        assert tm_search._tm_align.__wrapped__() is None


def test_diversity_single_linkage_chains_and_greedy_does_not():
    # a path A - B - C - D of neighbours (TM 0.6) with all other pairs at 0.1
    tm = torch.full((4, 4), 0.1, dtype=torch.float64)
    tm.fill_diagonal_(1.0)
    for i in range(3):
        tm[i, i + 1] = tm[i + 1, i] = 0.6
    div = M.diversity(None, tm=tm)
    assert div["clusters_at_0_5"] == 1 and div["greedy_clusters_at_0_5"] == 2
    assert div["mean_pairwise_tm"] == pytest.approx((3 * 0.6 + 3 * 0.1) / 6)
    assert M.diversity(None, tm=tm, threshold=0.7)["clusters_at_0_7"] == 4


# ---------------------------------------------------------------------------- validation


def test_bad_inputs_raise_value_errors_naming_the_argument():
    x = chain(HELIX, 10)[None]
    with pytest.raises(ValueError, match="atoms"):
        M.radius_of_gyration(x[0])  # (L, 4, 3): no batch
    with pytest.raises(ValueError, match="atoms"):
        M.secondary_structure(x[..., :2, :])
    with pytest.raises(ValueError, match="mask"):
        M.clash_rate(x, torch.ones(1, 10))  # float mask
    with pytest.raises(ValueError, match="mask"):
        M.ca_bond_fraction(x, torch.ones(1, 9, dtype=torch.bool))
    bad = x.clone()
    bad[0, 3, 1, 0] = math.nan
    with pytest.raises(ValueError, match="residue 3"):
        M.radius_of_gyration(bad)
    masked = torch.ones(1, 10, dtype=torch.bool)
    masked[0, 3] = False  # the NaN residue is padding: fine
    assert torch.isfinite(M.radius_of_gyration(bad, masked)).all()
    with pytest.raises(ValueError, match="min_separation"):
        M.clash_rate(x, min_separation=0)
    with pytest.raises(ValueError, match="top_k"):
        M.max_tm_to([x[0]], [x[0]], top_k=0)


# ---------------------------------------------------------------------------- figures


def test_benchmark_plots_write_pngs(tmp_path):
    from proteins import plots

    helix, pin = chain(HELIX, 20), hairpin()
    real = pad([helix, random_coil(18, seed=1)], 20)
    sets = {"model": [(torch.stack([helix, rigid_motion(helix, 1)]), None), pad([pin], 18)], "real (held out)": [real]}
    paths = plots.write_benchmark_plots(sets, tmp_path / "figs", title="test", traces=3)
    names = sorted(p.name for p in paths)
    assert names == ["ca_traces.png", "ramachandran_model.png", "rg_vs_length.png", "ss_composition.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the reference curve's prefactor is the least-squares one: exact for R_g = 2.2 L^0.4
    lengths = np.array([50.0, 80.0, 120.0])
    assert plots.fit_rg_prefactor(lengths, 2.2 * lengths**0.4) == pytest.approx(2.2)
    with pytest.raises(ValueError, match="rows"):
        plots.plot_ss_composition({"model": {"helix": 0.5}}, tmp_path / "bad.png")


def test_ramachandran_pair_draws_a_log_density_on_the_model_range(tmp_path):
    from proteins import plots

    g = torch.Generator().manual_seed(0)
    angles = (torch.rand(200, 2, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    seen = []

    def log_density(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        return torch.full((len(x),), -math.log(4 * math.pi**2), dtype=x.dtype)  # uniform on the torus

    path = plots.plot_ramachandran_pair(angles, angles, tmp_path / "r.png", log_density=log_density, grid_size=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grid = torch.cat(seen)
    # every cell centre once, wrapped into the model's range [0, 2 pi) (FlatTorus' convention)
    assert grid.shape == (64, 2) and grid.min() >= 0 and grid.max() < 2 * math.pi
    centres = sorted({round(float(v), 6) for v in grid[:, 0]})
    assert len(centres) == 8 and centres[0] == pytest.approx(math.pi / 8)
    with pytest.raises(ValueError, match="grid_size"):
        plots.plot_ramachandran_pair(angles, angles, tmp_path / "x.png", log_density=log_density, grid_size=1)
