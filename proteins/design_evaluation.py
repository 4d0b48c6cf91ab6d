"""Evaluating sequence design and folding on held-out chains: the pieces of the co-design
benchmark's table, as library calls.

- :func:`held_out_crops`: held-out chains cropped, padded and ordered by length;
- :func:`sequence_recovery`: the fraction of native residues a designed sequence recovers;
- the inverse-folding baselines: :func:`structure_features` (local backbone geometry, DSSP state,
  CB neighbour counts), :func:`train_feature_classifier` (a per-residue MLP on them) and
  :func:`residue_frequencies` (the most-frequent-type baseline);
- :func:`propensity_log_odds`: helix versus strand preferences of the residue types.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gm.phase_log import PhaseLog
from proteins.data import AMINO_ACIDS, StructureDataset
from proteins.frames import with_ideal_oxygens

__all__ = [
    "HeldOut",
    "held_out_crops",
    "batch_slices",
    "sequence_recovery",
    "structure_features",
    "structure_feature_table",
    "train_feature_classifier",
    "residue_frequencies",
    "propensity_log_odds",
]


@dataclass
class HeldOut:
    """Held-out crops, padded: atoms (B, L, 4, 3) Angstrom, residues (B, L), mask (B, L)."""

    atoms: torch.Tensor
    residues: torch.Tensor
    mask: torch.Tensor
    names: list[str]


def held_out_crops(test: StructureDataset, count: int, max_length: int, seed: int) -> HeldOut:
    """``count`` test chains (distinct, random), each cropped to at most ``max_length`` residues
    at a random start; ordered by length (batches of similar lengths pad little)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(test), generator=g)[:count].tolist()
    items = []
    for i in order:
        chain, residues = test[i], test.residue_types(i)
        length = min(len(chain), max_length)
        start = int(torch.randint(len(chain) - length + 1, (), generator=g))
        items.append(
            (
                chain.atoms[start : start + length],
                residues[start : start + length],
                f"{Path(chain.source).name}:{chain.chain_id}:{chain.start + start}",
            )
        )
    items.sort(key=lambda item: len(item[1]))
    longest = max(len(r) for _, r, _ in items)
    atoms = torch.zeros(len(items), longest, 4, 3)
    residues = torch.full((len(items), longest), -1, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for k, (a, r, _) in enumerate(items):
        atoms[k, : len(r)], residues[k, : len(r)], mask[k, : len(r)] = a, r, True
    return HeldOut(with_ideal_oxygens(atoms, mask), residues, mask, [name for _, _, name in items])


def batch_slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def structure_features(atoms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-residue local structure features ``(B, L, F)`` from backbone atoms (Angstrom): sin/cos
    of phi, psi, omega of the residue and its two neighbours (0 where undefined), the DSSP
    state (one-hot helix / strand / coil) and the numbers of CB atoms within 6, 8, 10 and 12 A
    of its CB (ideal CB from N, CA, C), scaled."""
    from proteins.frames import backbone_dihedrals, beta_carbons
    from proteins.metrics import secondary_structure

    phi, psi, omega = backbone_dihedrals(atoms[..., :3, :], mask)
    angles = torch.stack([phi, psi, omega], dim=-1)  # (B, L, 3)
    trig = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).nan_to_num(0.0)
    window = []
    for shift in (-1, 0, 1):  # a fixed window of three residues: three rolls, not a loop over residues
        rolled = torch.roll(trig, shifts=-shift, dims=1)
        valid = torch.roll(mask, shifts=-shift, dims=1)
        index = torch.arange(mask.shape[1], device=mask.device) + shift
        valid = valid & (index >= 0) & (index < mask.shape[1])
        window.append(rolled * valid[..., None])
    ss = secondary_structure(atoms, mask).clamp_min(0)
    ss_onehot = torch.nn.functional.one_hot(ss.long(), 3).to(atoms.dtype)
    cb = beta_carbons(atoms[..., :3, :])
    d = torch.cdist(cb, cb)
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(mask.shape[1], dtype=torch.bool, device=mask.device)
    counts = torch.stack([((d < r) & pair).sum(-1) for r in (6.0, 8.0, 10.0, 12.0)], dim=-1).to(atoms.dtype)
    return torch.cat(window + [ss_onehot, counts / 10.0], dim=-1) * mask[..., None]


def structure_feature_table(
    dataset: StructureDataset, max_length: int, chains: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and residue types of every residue of ``dataset``'s chains (or of the chains
    with indices ``chains``; chains longer than ``max_length`` in pieces of at most that
    length), flattened over real, known residues."""
    feats, types = [], []
    pieces = []
    for i in range(len(dataset)) if chains is None else chains:
        chain, residues = dataset[i], dataset.residue_types(i)
        for s in range(0, len(chain), max_length):
            pieces.append((chain.atoms[s : s + max_length], residues[s : s + max_length]))
    pieces.sort(key=lambda p: len(p[1]))
    for sl in batch_slices(len(pieces), 32):
        group = pieces[sl]
        longest = max(len(r) for _, r in group)
        atoms = torch.zeros(len(group), longest, 4, 3)
        residues = torch.full((len(group), longest), -1, dtype=torch.long)
        mask = torch.zeros(len(group), longest, dtype=torch.bool)
        for k, (a, r) in enumerate(group):
            atoms[k, : len(r)], residues[k, : len(r)], mask[k, : len(r)] = a, r, True
        atoms = with_ideal_oxygens(atoms, mask)
        f = structure_features(atoms, mask)
        keep = mask & (residues >= 0)
        feats.append(f[keep])
        types.append(residues[keep])
    return torch.cat(feats), torch.cat(types)


def train_feature_classifier(
    train_set: StructureDataset,
    val_set: StructureDataset,
    *,
    seed: int,
    max_length: int = 128,
    epochs: int = 30,
    hidden: int = 128,
    chains: int | None = None,
    progress: bool = False,
) -> torch.nn.Module:
    """The per-residue MLP baseline: residue type from :func:`structure_features`, trained with
    Adam on every residue of the training chains (or of a random subset of them, ``chains``;
    chains cut into pieces of at most ``max_length`` residues, as the evaluated crops are), the
    epoch with the lowest validation cross-entropy kept.

    Args:
        chains: train on a random subset (drawn with ``seed``) of this many training chains
            instead of all of them (all if there are fewer), for a quick run.
        progress: report on stderr what is being trained and, every 10 s, the epoch.

    Raises:
        ValueError: naming the argument, for ``epochs``, ``max_length``, ``hidden`` or ``chains``
            below 1.
    """
    for name, value in (("epochs", epochs), ("max_length", max_length), ("hidden", hidden)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if chains is not None and chains < 1:
        raise ValueError(f"chains must be at least 1 (or None: every training chain), got {chains}")
    subset = None
    if chains is not None and chains < len(train_set):
        # a random subset, not the first chains: the dataset's order follows its source files,
        # so its first chains would be one protein family
        subset = sorted(torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:chains].tolist())
    log = PhaseLog("codesign", progress)
    t0 = time.perf_counter()
    used = len(train_set) if subset is None else len(subset)
    log.start(
        f"feature MLP baseline: structure features of {used} training chains"
        + ("" if subset is None else f" (a random subset of {len(train_set)})")
    )
    x, y = structure_feature_table(train_set, max_length, subset)
    xv, yv = structure_feature_table(val_set, max_length)
    log.start(f"feature MLP baseline: training on {len(x)} residues for {epochs} epochs")
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, len(AMINO_ACIDS)),
    )
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(seed)
    best, best_state = math.inf, None
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for sl in batch_slices(len(x), 512):
            idx = perm[sl]
            loss = torch.nn.functional.cross_entropy(mlp(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # one read-back per epoch, for the model selection
            val = float(torch.nn.functional.cross_entropy(mlp(xv), yv))
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in mlp.state_dict().items()}
        log.update(
            f"feature MLP baseline: epoch {epoch + 1}/{epochs}, validation cross-entropy {val:.3f}, "
            f"{time.perf_counter() - t0:.0f} s"
        )
    assert best_state is not None  # epochs >= 1, and a finite loss beats inf
    mlp.load_state_dict(best_state)
    log.start(
        f"feature MLP baseline: done in {time.perf_counter() - t0:.0f} s (best validation cross-entropy {best:.3f})"
    )
    return mlp.eval()


def residue_frequencies(dataset: StructureDataset) -> torch.Tensor:
    """Frequencies ``(20,)`` of the residue types of ``dataset`` (float64)."""
    residues = torch.cat([dataset.residue_types(i) for i in range(len(dataset))])
    counts = torch.bincount(residues[residues >= 0], minlength=len(AMINO_ACIDS)).to(torch.float64)
    return counts / counts.sum()


def sequence_recovery(designed: torch.Tensor, native: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-protein fraction of the known native residues (type >= 0) that ``designed`` recovers,
    ``(B,)``: sum_i [designed_i = native_i] / #known, over the real residues of ``mask``."""
    known = mask & (native >= 0)
    return ((designed == native) & known).sum(-1) / known.sum(-1).clamp_min(1)


def propensity_log_odds(
    residues: torch.Tensor, ss: torch.Tensor, mask: torch.Tensor, *, pseudo: float = 1.0
) -> np.ndarray:
    """Per residue type, ``log P(type | helix) / P(type | strand)`` ``(20,)`` over the real
    residues (``ss``: 1 helix, 2 strand), with ``pseudo`` counts added to every type."""
    known = mask & (residues >= 0)
    counts = []
    for state in (1, 2):
        sel = known & (ss == state)
        counts.append(torch.bincount(residues[sel], minlength=len(AMINO_ACIDS)).to(torch.float64) + pseudo)
    helix, strand = (c / c.sum() for c in counts)
    return torch.log(helix / strand).numpy()
