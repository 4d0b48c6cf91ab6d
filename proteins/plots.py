"""Figures of generated backbones against real ones (matplotlib, written as PNG files).

Every function takes backbone atoms ``(B, L, 4, 3)`` (Angstrom) with optional masks, so it
plots samples, held-out structures and baselines alike.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from proteins import metrics

__all__ = ["ramachandran", "radius_of_gyration_vs_length", "secondary_structure_bars", "ca_traces",
           "write_benchmark_plots"]

SS_COLOURS = {0: "0.6", 1: "tab:red", 2: "tab:blue"}  # coil, helix, strand


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def ramachandran(sets: dict[str, tuple[Tensor, Tensor | None]], path: str | Path, *, bins: int = 72,
                 title: str = "") -> Path:
    """Side-by-side (phi, psi) histograms (log density) of each named set ``{name: (atoms, mask)}``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.6), squeeze=False)
    edges = np.linspace(-180, 180, bins + 1)
    for ax, (name, (atoms, mask)) in zip(axes[0], sets.items()):
        angles = np.degrees(metrics.phi_psi(atoms, mask).numpy())
        hist, _, _ = np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges], density=True)
        ax.imshow(np.log(hist.T + 1e-6), origin="lower", extent=(-180, 180, -180, 180), cmap="viridis",
                  vmin=math.log(1e-6), aspect="equal")
        ax.set_title(f"{name} ({len(angles)} residues)", fontsize=9)
        ax.set_xlabel("phi (deg)")
        ax.set_ylabel("psi (deg)")
    fig.suptitle(title or "Ramachandran (log density)", fontsize=10)
    return _save(fig, path)


def radius_of_gyration_vs_length(sets: dict[str, tuple[Tensor, Tensor | None]], path: str | Path, *,
                                 reference: str | None = None, title: str = "") -> Path:
    """Scatter of CA radius of gyration against length per set, with the fit ``a L^0.4`` to
    ``reference`` (a key of ``sets``, e.g. the real structures) drawn as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    fitted = None
    for name, (atoms, mask) in sets.items():
        rg = metrics.radius_of_gyration(atoms, mask).numpy()
        lengths = (mask.sum(-1) if mask is not None else torch.full((atoms.shape[0],), atoms.shape[1])).numpy()
        jitter = np.random.default_rng(0).uniform(-1.5, 1.5, len(lengths))
        ax.scatter(lengths + jitter, rg, s=10, alpha=0.6, label=name)
        if name == reference:
            fitted = float(np.mean(rg / lengths**0.4))
    if fitted is not None:
        grid = np.linspace(30, 300, 100)
        ax.plot(grid, fitted * grid**0.4, "k--", lw=1, label=f"{reference}: {fitted:.2f} L^0.4")
    ax.set_xlabel("length (residues)")
    ax.set_ylabel("radius of gyration (A)")
    ax.legend(fontsize=8)
    ax.set_title(title or "compactness", fontsize=10)
    return _save(fig, path)


def secondary_structure_bars(fractions: dict[str, dict[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Stacked bars of helix / strand / coil fractions per set ``{name: {"helix": ., ...}}``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(fractions) + 2, 3.5))
    names = list(fractions)
    bottom = np.zeros(len(names))
    for key, colour in (("helix", SS_COLOURS[1]), ("strand", SS_COLOURS[2]), ("coil", SS_COLOURS[0])):
        values = np.array([fractions[n][key] for n in names])
        ax.bar(names, values, bottom=bottom, color=colour, label=key)
        bottom += values
    ax.set_ylabel("fraction of residues (pydssp)")
    ax.legend(fontsize=8, loc="upper right")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.set_title(title or "secondary structure", fontsize=10)
    return _save(fig, path)


def ca_traces(atoms: Tensor, path: str | Path, *, count: int = 4, title: str = "") -> Path:
    """3-D CA traces of the first ``count`` structures, segments coloured by secondary
    structure (helix red, strand blue, coil grey)."""
    plt = _pyplot()
    count = min(count, atoms.shape[0])
    codes = metrics.secondary_structure(atoms[:count]).numpy()
    fig = plt.figure(figsize=(3.4 * count, 3.4))
    for k in range(count):
        ax = fig.add_subplot(1, count, k + 1, projection="3d")
        ca = atoms[k, :, 1].numpy()
        for i in range(len(ca) - 1):  # a plotting loop: one line segment per residue pair
            ax.plot(*ca[i:i + 2].T, color=SS_COLOURS.get(int(codes[k, i]), "0.6"), lw=2)
        ax.set_axis_off()
        ax.set_title(f"sample {k} (L = {len(ca)})", fontsize=9)
    fig.suptitle(title or "CA traces by secondary structure", fontsize=10)
    return _save(fig, path)


def write_benchmark_plots(sets: dict[str, list[tuple[Tensor, Tensor]]], out: str | Path, *, title: str = "",
                          model: str = "model", real: str = "real (held out)") -> list[Path]:
    """The backbone benchmark's figures from ``{row: [(atoms, mask) per length]}``:
    ``ramachandran.png`` (model vs real), ``radius_of_gyration.png``, ``secondary_structure.png``
    and ``ca_traces.png`` (a few model samples of the longest length)."""
    out = Path(out)

    def pooled(row):
        parts = sets[row]
        longest = max(a.shape[1] for a, _ in parts)
        atoms = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, 0, 0, longest - a.shape[1])) for a, _ in parts])
        mask = torch.cat([torch.nn.functional.pad(m, (0, longest - m.shape[1])) for _, m in parts])
        return atoms, mask

    everything = {row: pooled(row) for row in sets}
    paths = [ramachandran({row: everything[row] for row in (model, real) if row in everything},
                          out / "ramachandran.png", title=title),
             radius_of_gyration_vs_length(everything, out / "radius_of_gyration.png", reference=real, title=title)]
    fractions = {row: metrics.ss_fractions(metrics.secondary_structure(*everything[row])) for row in everything}
    paths.append(secondary_structure_bars(fractions, out / "secondary_structure.png", title=title))
    longest_model = max(sets[model], key=lambda part: part[0].shape[1])[0]
    paths.append(ca_traces(longest_model, out / "ca_traces.png", title=title))
    return paths
