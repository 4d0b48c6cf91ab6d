"""TM-score and CA RMSD of backbone pairs: the superposition search on a given correspondence
and the alignment search without one (TM-align through ``tmtools``; without it, threadings and
biotite's structural alignment); the definitions and heuristics are in :mod:`proteins.metrics`."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["tm_d0", "backbone_atom_array", "tm_score", "ca_rmsd"]

# biotite's final refinement loop stops only when the alignment repeats exactly, and with the
# default (no limit) it can oscillate forever between two alignments: cap it (TM-align-like).
_HOMOLOG_ITERATIONS = 20

# gapless threadings (best lower bounds) refined as alignment candidates besides biotite's
_THREADINGS = 3
# shortest seed fragment of the superposition search: 4 as in the TM-score program for known
# correspondences; 8 for alignment candidates (2.5x fewer seeds, <= 0.006 lower on real pairs)
_MIN_SEED_ALIGNED, _MIN_SEED = 4, 8

# ----------------------------------------------------------------------------------------------
# TM-score: superposition search on a given correspondence


def tm_d0(length: int) -> float:
    """TM-score distance scale d0 (Angstrom) for a normalising length (Zhang & Skolnick 2004),
    floored at 0.5 A as in TM-align and biotite."""
    return max(1.24 * max(length - 15, 0) ** (1.0 / 3.0) - 1.8, 0.5)


def _kabsch(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched weighted least-squares superposition of y onto x.

    x, y: ``(..., n, 3)``, w: ``(..., n)`` non-negative with a positive sum. Returns the proper
    rotations ``(..., 3, 3)`` and translations ``(..., 3)`` minimising sum w |R y + t - x|^2.
    """
    wn = (w / w.sum(-1, keepdims=True))[..., None, :]  # (..., 1, n); matmul beats einsum here
    cx, cy = (wn @ x)[..., 0, :], (wn @ y)[..., 0, :]
    h = np.swapaxes(y - cy[..., None, :], -1, -2) @ ((x - cx[..., None, :]) * w[..., None])
    u, _, vt = np.linalg.svd(h)
    v, ut = np.swapaxes(vt, -1, -2), np.swapaxes(u, -1, -2)
    # flip the last singular direction where the optimum would be a reflection
    sign = np.where(np.linalg.det(v @ ut) < 0, -1.0, 1.0)
    v = np.concatenate([v[..., :2], v[..., 2:] * sign[..., None, None]], axis=-1)
    rot = v @ ut
    return rot, cx - (rot @ cy[..., None])[..., 0]


def _kth_smallest(d: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """k-th smallest valid entry along the last axis (inf where fewer than k are valid)."""
    k = min(k, d.shape[-1])
    return np.partition(np.where(valid, d, np.inf), k - 1, axis=-1)[..., k - 1]


def _refine(
    x: np.ndarray, y: np.ndarray, valid: np.ndarray, seed: np.ndarray, norm_length: int, iterations: int
) -> np.ndarray:
    """Best TM-score reached from each seed subset by iterative re-superposition.

    x, y: ``(..., n, 3)`` paired CA coordinates (reference, model); valid: ``(..., n)`` which
    pairs exist; seed: ``(..., n)`` initial superposition subsets (subsets of valid, each with
    >= 1 pair). Each round superimposes on the current subset, scores all valid pairs and
    takes as the next subset the pairs closer than d_search (at least the 3 closest).
    Returns the best score per seed, shape ``(...)``.
    """
    d0 = tm_d0(norm_length)
    d_search = min(max(d0, 4.5), 8.0)
    subset = seed
    best = np.zeros(seed.shape[:-1])
    for _ in range(iterations):
        rot, trans = _kabsch(x, y, subset.astype(np.float64))
        moved = y @ np.swapaxes(rot, -1, -2) + trans[..., None, :]
        d = np.sqrt(((moved - x) ** 2).sum(-1))
        score = np.where(valid, 1.0 / (1.0 + (d / d0) ** 2), 0.0).sum(-1) / norm_length
        best = np.maximum(best, score)
        cut = np.maximum(d_search, _kth_smallest(d, valid, 3))
        new = valid & (d <= cut[..., None])
        new = np.where(new.any(-1, keepdims=True), new, subset)  # never an empty subset
        if np.array_equal(new, subset):
            break
        subset = new
    return best


def _seed_windows(n: int, min_fragment: int = 4) -> np.ndarray:
    """Seed subsets ``(S, n)``: contiguous fragments of lengths n, n/2, n/4, ... (>= min_fragment)
    at starts spaced by half a fragment (plus the last window), as the TM-score program seeds."""
    rows = []
    length = n
    while True:
        step = max(1, length // 2)
        starts = sorted(set(range(0, n - length + 1, step)) | {n - length})
        for s in starts:
            row = np.zeros(n, dtype=bool)
            row[s : s + length] = True
            rows.append(row)
        if length // 2 < min_fragment:
            break
        length //= 2
    return np.stack(rows)


def _tm_on_pairs(x: np.ndarray, y: np.ndarray, norm_length: int, min_fragment: int = 4, iterations: int = 20) -> float:
    """Max TM-score over superpositions for fixed residue pairs x[i] <-> y[i] (``(n, 3)`` each),
    searched from the seed fragments of :func:`_seed_windows`."""
    n = len(x)
    if n == 0:
        return 0.0
    seeds = _seed_windows(n, min_fragment)
    valid = np.ones_like(seeds)
    best = _refine(
        np.broadcast_to(x, (len(seeds), n, 3)),
        np.broadcast_to(y, (len(seeds), n, 3)),
        valid,
        seeds,
        norm_length,
        iterations,
    )
    return float(best.max())


# ----------------------------------------------------------------------------------------------
# TM-score: alignments without correspondence


def _correlate(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``c[..., s + n - 1] = sum_i f[..., i] g[..., i + s]`` for shifts s in [-(n - 1), m - 1]
    (``f`` ``(..., n)``, ``g`` ``(..., m)``, broadcast), by FFT convolution with reversed f."""
    n, m = f.shape[-1], g.shape[-1]
    size = n + m - 1
    fast = 1 << (size - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(f[..., ::-1], fast) * np.fft.rfft(g, fast), fast)
    return out[..., :size]


def _threading_bounds(
    x: np.ndarray, refs: np.ndarray, ref_valid: np.ndarray, norm_length: int, min_overlap: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Lower bounds of the TM-score of every gapless threading of chain x along each reference.

    Shift s pairs x[i] (``(n, 3)``) with refs[k, i + s] (``(N, M, 3)`` padded, real where
    ``ref_valid``). For the c pairs of a shift, the least-squares superposition leaves a mean
    squared deviation r^2 that follows from the pair sums alone (Kabsch: the centred sums of
    squares minus twice the signed singular values of the cross-covariance), and all these
    sums over all shifts are FFT cross-correlations, so every shift of every reference costs
    O((n + M) log(n + M)) plus one 3x3 SVD. Since 1 / (1 + u) is convex, Jensen's inequality
    gives TM >= (c / L) / (1 + r^2 / d0^2) for that superposition: a valid lower bound.
    Shifts with fewer than ``min_overlap`` pairs get 0.

    Returns:
        ``(bound, shifts)``: ``(N, O)`` bounds and the ``(O,)`` shifts s = -(n - 1) ... M - 1.
    """
    n, m = len(x), refs.shape[1]
    d0 = tm_d0(norm_length)
    v = ref_valid.astype(np.float64)  # (N, M)
    # centre both (the ref on its real residues) so the sums below cancel little
    xc = x - x.mean(0)
    centre = (refs * v[..., None]).sum(1) / np.maximum(v.sum(1), 1.0)[:, None]
    y = (refs - centre[:, None]) * v[..., None]
    ones = np.ones(n)
    count = _correlate(ones, v)  # (N, O)
    sx = np.stack([_correlate(xc[:, a], v) for a in range(3)], -1)  # sum of paired x, (N, O, 3)
    sy = np.stack([_correlate(ones, y[..., a]) for a in range(3)], -1)
    sxx = _correlate((xc**2).sum(-1), v)
    syy = _correlate(ones, (y**2).sum(-1))
    sxy = np.stack([np.stack([_correlate(xc[:, a], y[..., b]) for b in range(3)], -1) for a in range(3)], -2)
    safe = np.maximum(np.round(count), 1.0)
    cov = sxy - sx[..., :, None] * sy[..., None, :] / safe[..., None, None]  # (N, O, 3, 3)
    ex = sxx - (sx**2).sum(-1) / safe
    ey = syy - (sy**2).sum(-1) / safe
    sing = np.linalg.svd(cov, compute_uv=False)
    sing[..., 2] *= np.where(np.linalg.det(cov) < 0, -1.0, 1.0)  # proper rotations only
    msd = np.maximum(ex + ey - 2.0 * sing.sum(-1), 0.0) / safe
    bound = (count / norm_length) / (1.0 + msd / d0**2)
    bound = np.where(np.round(count) >= min_overlap, bound, 0.0)
    return bound, np.arange(-(n - 1), m)


def _best_threadings(x: np.ndarray, y: np.ndarray, norm_length: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Residue pairs of the ``count`` gapless threadings of x along y with the best bounds."""
    n, m = len(x), len(y)
    bound, shifts = _threading_bounds(x, y[None], np.ones((1, m), dtype=bool), norm_length, _min_overlap(n, m))
    order = np.argsort(-bound[0], kind="stable")[:count]
    return [_threading_pairs(n, m, int(shifts[k])) for k in order if bound[0, k] > 0]


def _threading_pairs(n: int, m: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(max(0, -shift), min(n, m - shift))
    return i, i + shift


def _min_overlap(n: int, m: int) -> int:
    # a shift with fewer pairs than a third of the shorter chain scores < 1/3 of it at best
    return max(3, min(n, m) // 3)


def backbone_atom_array(coords: Tensor | np.ndarray):
    """A :class:`biotite.structure.AtomArray` of one chain (chain A, residues numbered from 1).

    Args:
        coords: ``(n, A >= 3, 3)`` backbone atoms N, CA, C[, O] (residues ALA, with an ideal
            CB from :func:`proteins.frames.beta_carbons` so that biotite's 3Di encoder, which
            needs N, CA, C, CB, works), or a CA trace ``(n, 3)`` (residues GLY, CA atoms only).
    """
    import biotite.structure as struc

    if isinstance(coords, Tensor):
        coords = coords.detach().to("cpu", torch.float64).numpy()
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 2 and coords.shape[1] == 3:
        names, elements, res_name = ["CA"], ["C"], "GLY"
        xyz = coords[:, None, :]
    elif coords.ndim == 3 and coords.shape[1] >= 3 and coords.shape[2] == 3:
        from proteins.frames import beta_carbons

        cb = beta_carbons(torch.from_numpy(coords[:, :3])).numpy()
        have_o = coords.shape[1] >= 4
        names = ["N", "CA", "C"] + (["O"] if have_o else []) + ["CB"]
        elements = ["N", "C", "C"] + (["O"] if have_o else []) + ["C"]
        res_name = "ALA"
        xyz = np.concatenate([coords[:, : 4 if have_o else 3], cb[:, None]], axis=1)
    else:
        raise ValueError(f"coords must have shape (n, A >= 3, 3) or (n, 3), got {coords.shape}")
    n, per = xyz.shape[:2]
    array = struc.AtomArray(n * per)
    array.coord = xyz.reshape(-1, 3).astype(np.float32)
    array.atom_name = np.tile(np.array(names), n)
    array.element = np.tile(np.array(elements), n)
    array.res_id = np.repeat(np.arange(1, n + 1), per)
    array.res_name = np.full(n * per, res_name)
    array.chain_id = np.full(n * per, "A")
    array.hetero = np.zeros(n * per, dtype=bool)
    return array


def _homolog_alignment(
    ref: np.ndarray, model: np.ndarray, norm_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Residue pairs ``(i, j)`` from biotite's structural-homolog superposition and the model's
    CA coordinates under biotite's final superposition, or None where biotite finds no anchor
    (it raises for very dissimilar pairs) or an input lacks the backbone the 3Di code needs."""
    import biotite.structure as struc

    if ref.ndim != 3 or model.ndim != 3 or min(len(ref), len(model)) < 5:
        return None
    a, b = backbone_atom_array(ref), backbone_atom_array(model)
    try:
        _, transform, ia, ib = struc.superimpose_structural_homologs(
            a, b, reference_length=int(norm_length), max_iterations=_HOMOLOG_ITERATIONS
        )
    except ValueError:  # "No anchors found, the structures are too dissimilar"
        return None
    # the indices are atom indices of CA atoms; map them to residue indices
    return a.res_id[ia] - 1, b.res_id[ib] - 1, transform.apply(model[:, 1])


def _tm_of_distances(d: np.ndarray, norm_length: int) -> float:
    return float((1.0 / (1.0 + (d / tm_d0(norm_length)) ** 2)).sum() / norm_length)


@functools.cache
def _tm_align():
    """``tmtools.tm_align`` (TM-align, Zhang & Skolnick 2005), or None when tmtools is missing
    (then the alignment search falls back to :func:`_heuristic_scores`, with a warning once)."""
    try:
        from tmtools import tm_align
    except ImportError:
        warnings.warn(
            "tmtools is not installed (pip install tmtools, or rdfm[proteins]): TM-scores without "
            "correspondence fall back to rdfm's alignment heuristic, which agrees with TM-align on "
            "similar chains but is lower on dissimilar ones (by up to about 0.2 at TM 0.2-0.4)",
            stacklevel=3,
        )
        return None
    return tm_align


def _pair_scores(ref: np.ndarray, model: np.ndarray, aligned: bool, both: bool) -> tuple[float, float]:
    """(TM normalised by ref, TM normalised by model; the latter NaN unless ``both``) of two
    chains given as ``(n, A, 3)`` backbones or ``(n, 3)`` CA traces; one alignment search
    serves both normalisations."""
    x, y = (ref[:, 1] if ref.ndim == 3 else ref), (model[:, 1] if model.ndim == 3 else model)
    n, m = len(x), len(y)
    if aligned:
        scores = [_tm_on_pairs(x, y, n, _MIN_SEED_ALIGNED)]
        if both:
            scores.append(scores[0] if m == n else _tm_on_pairs(x, y, m, _MIN_SEED_ALIGNED))
        return scores[0], scores[1] if both else math.nan
    tm_align = _tm_align()
    if tm_align is None:
        return _heuristic_scores(ref, model, both)
    # TM-align reads CA coordinates only; the sequences do not steer its alignment (any letters)
    result = tm_align(np.ascontiguousarray(x, np.float64), np.ascontiguousarray(y, np.float64), "A" * n, "A" * m)
    return float(result.tm_norm_chain1), float(result.tm_norm_chain2) if both else math.nan


def _heuristic_scores(ref: np.ndarray, model: np.ndarray, both: bool) -> tuple[float, float]:
    """:func:`_pair_scores` without correspondence and without TM-align: the best of biotite's
    structural-homolog alignment and the best gapless threadings, each refined by the
    superposition search (see :mod:`proteins.metrics`)."""
    x, y = (ref[:, 1] if ref.ndim == 3 else ref), (model[:, 1] if model.ndim == 3 else model)
    n, m = len(x), len(y)
    norms = (n, m) if both else (n,)
    alignments = _best_threadings(x, y, n, _THREADINGS)
    homolog = _homolog_alignment(ref, model, n)
    if homolog is not None:
        alignments.append(homolog[:2])
    unique: dict[tuple[bytes, bytes], tuple[np.ndarray, np.ndarray]] = {}
    for i, j in alignments:  # threading and biotite often agree: refine each alignment once
        unique.setdefault((i.tobytes(), j.tobytes()), (i, j))
    alignments = list(unique.values())
    scores: list[float] = []
    for length in norms:
        if scores and length == norms[0]:  # equal lengths: same d0, same score
            scores.append(scores[0])
            continue
        best = max((_tm_on_pairs(x[i], y[j], length, _MIN_SEED) for i, j in alignments), default=0.0)
        if homolog is not None:  # biotite's own superposition, which the seeds may miss
            i, j, moved = homolog
            best = max(best, _tm_of_distances(np.linalg.norm(moved[j] - x[i], axis=-1), length))
        scores.append(best)
    return scores[0], scores[1] if both else math.nan


def _single(structure: Tensor | np.ndarray, mask: Tensor | np.ndarray | None, name: str) -> np.ndarray:
    """Real residues of one structure as float64 ``(n, A, 3)`` or ``(n, 3)``."""
    if isinstance(structure, Tensor):
        if not torch.is_floating_point(structure):
            raise ValueError(f"{name} must be floating point, got {structure.dtype}")
        structure = structure.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(structure, dtype=np.float64)
    if not ((x.ndim == 3 and x.shape[1] >= 2 and x.shape[2] == 3) or (x.ndim == 2 and x.shape[1] == 3)):
        raise ValueError(
            f"{name} must have shape (L, A, 3) (backbone atoms, CA at index 1) or (L, 3) (CA trace), got {x.shape}"
        )
    if x.ndim == 3 and x.shape[1] == 2:
        x = x[:, 1]  # N, CA without C: only the CA trace is usable
    if mask is not None:
        if isinstance(mask, Tensor):
            if mask.dtype != torch.bool:
                raise ValueError(f"{name} mask must be a bool tensor of shape ({len(x)},), got {mask.dtype}")
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (len(x),):
            raise ValueError(f"{name} mask must be bool of shape ({len(x)},), got {mask.dtype} {mask.shape}")
        x = x[mask]
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite coordinates in real residues; fix or mask them")
    if len(x) == 0:
        raise ValueError(f"{name} has no real residues")
    return x


def _structures(structures, mask, name: str) -> list[np.ndarray]:
    """A list of single structures from a batch ``(B, L, A, 3)`` (+ mask ``(B, L)``) or a sequence."""
    if isinstance(structures, (Tensor, np.ndarray)) and np.ndim(structures) == 4:
        if mask is not None and (not hasattr(mask, "shape") or tuple(mask.shape) != tuple(structures.shape[:2])):
            raise ValueError(
                f"{name} mask must have shape {tuple(structures.shape[:2])}, got "
                f"{tuple(mask.shape) if hasattr(mask, 'shape') else type(mask).__name__}"
            )
        return [
            _single(structures[b], None if mask is None else mask[b], f"{name}[{b}]") for b in range(len(structures))
        ]
    if isinstance(structures, (Tensor, np.ndarray)):
        raise ValueError(
            f"{name} must be a batch (B, L, A, 3) or a sequence of (L, A, 3) / (L, 3) structures, "
            f"got shape {tuple(structures.shape)}"
        )
    structures = list(structures)
    if mask is not None and len(mask) != len(structures):
        raise ValueError(f"{name} mask must hold one mask per structure ({len(structures)}), got {len(mask)}")
    return [_single(s, None if mask is None else mask[b], f"{name}[{b}]") for b, s in enumerate(structures)]


def tm_score(
    reference: Tensor | np.ndarray,
    model: Tensor | np.ndarray,
    *,
    aligned: bool = False,
    reference_mask: Tensor | None = None,
    model_mask: Tensor | None = None,
) -> float:
    """TM-score of ``model`` against ``reference``, normalised by the reference length.

    Args:
        reference, model: one structure each, ``(L, A, 3)`` backbone atoms N, CA, C[, O]
            (CA is used for the score; N, C place the 3Di alignment) or a CA trace ``(L, 3)``.
        aligned: True when residue i of one corresponds to residue i of the other (same number
            of real residues, e.g. a structure and its prediction): only the superposition is
            searched, as the TM-score program does. False (default) when there is no
            correspondence (e.g. two generated samples, or a crop against a whole chain): the
            alignment is searched too, as TM-align does (see the module docstring). Two
            independent samples of equal length have no correspondence: use False.
        reference_mask, model_mask: optional bool ``(L,)`` of real residues.

    Returns:
        TM-score in (0, 1]: 1 for identical structures (any rigid motion); below about 0.2
        for unrelated proteins, above 0.5 mostly for the same fold (Xu & Zhang 2010).

    Raises:
        ValueError: for wrong shapes or masks, non-finite real coordinates, or ``aligned`` with
            different numbers of real residues.
    """
    ref = _single(reference, reference_mask, "reference")
    mod = _single(model, model_mask, "model")
    if aligned and len(ref) != len(mod):
        raise ValueError(
            f"aligned=True needs equal numbers of real residues, got reference {len(ref)} and model {len(mod)}"
        )
    return _pair_scores(ref, mod, aligned, both=False)[0]


def ca_rmsd(
    reference: Tensor | np.ndarray,
    model: Tensor | np.ndarray,
    *,
    reference_mask: Tensor | None = None,
    model_mask: Tensor | None = None,
) -> float:
    """CA RMSD (Angstrom) of ``model`` to ``reference`` after their optimal superposition
    (Kabsch), residue i against residue i (e.g. a structure and its prediction).

    Args:
        reference, model: ``(L, A, 3)`` backbone atoms (CA is atom 1) or CA traces ``(L, 3)``.
        reference_mask, model_mask: optional bool ``(L,)`` of real residues.

    Raises:
        ValueError: for wrong shapes or masks, non-finite real coordinates, or different
            numbers of real residues.
    """
    ref = _single(reference, reference_mask, "reference")
    mod = _single(model, model_mask, "model")
    if len(ref) != len(mod):
        raise ValueError(f"ca_rmsd needs equal numbers of real residues, got reference {len(ref)} and model {len(mod)}")
    ref, mod = (x[:, 1] if x.ndim == 3 else x for x in (ref, mod))  # CA traces
    rot, shift = _kabsch(ref, mod, np.ones(len(ref)))
    moved = mod @ rot.T + shift
    return float(np.sqrt(((moved - ref) ** 2).sum(-1).mean()))
