"""Figures of the backbone benchmark, written as PNG files.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (as in
:mod:`benchmarks.plotting`), so plotting needs no display and leaves pyplot's global backend
and state alone. Every function takes plain arrays or tensors, writes ``path`` (parent folders
are created) and returns it as a :class:`pathlib.Path`.

- :func:`plot_ramachandran_pair`: (phi, psi) histograms of samples and real residues side by
  side, on one colour scale, with the Jensen--Shannon divergence of :mod:`proteins.metrics`.
- :func:`plot_rg_vs_length`: radius of gyration against chain length for several sets, with
  the fit :math:`R_g = a L^{0.4}` to the real chains as a reference curve.
- :func:`plot_ss_composition`: helix / strand / coil fractions as stacked bars, one bar per
  row (model, real, baselines).
- :func:`plot_ca_traces`: 3-D CA traces of a few structures coloured by secondary structure.
- :func:`write_benchmark_plots`: all of the above from the benchmark's sets of backbones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from gm.files import save_figure
from proteins.metrics import (
    SS_COIL,
    SS_HELIX,
    SS_STRAND,
    phi_psi,
    radius_of_gyration,
    ramachandran_histogram,
    ramachandran_js,
    secondary_structure,
    ss_fractions,
)

__all__ = [
    "SS_COLOURS",
    "RG_EXPONENT",
    "fit_rg_prefactor",
    "plot_ramachandran_pair",
    "plot_rg_vs_length",
    "plot_ss_composition",
    "plot_ca_traces",
    "write_benchmark_plots",
    "QUALITY_CURVE_METRICS",
    "plot_quality_curve",
]

#: colours of the three secondary-structure states (coil, helix, strand), PyMOL-like
SS_COLOURS = {SS_COIL: "#9e9e9e", SS_HELIX: "#d62728", SS_STRAND: "#f2b701"}
#: exponent of the reference curve R_g = a L^nu (compact globular chains: about 0.4)
RG_EXPONENT = 0.4


def _numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be array-like of {np.dtype(dtype).name}: {err}") from None


def plot_ramachandran_pair(
    samples: torch.Tensor | np.ndarray,
    real: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    bins: int = 72,
    js_bins: int = 36,
    labels: tuple[str, str] = ("samples", "real"),
    title: str | None = None,
    dpi: int = 150,
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = None,
    model_angle_start: float = 0.0,
    grid_size: int = 60,
) -> Path:
    """Side-by-side 2-D (phi, psi) histograms in degrees, on a shared logarithmic colour scale,
    and optionally a third panel with a model's log-density on a ``grid_size`` x ``grid_size``
    grid of cell centres.

    Args:
        samples, real: ``(n, 2)`` (phi, psi) in radians, e.g. from
            :func:`proteins.metrics.phi_psi`.
        path: output PNG.
        bins: cells per angle of the drawn histograms (72 = 5 degrees).
        js_bins: cells per angle of the Jensen--Shannon divergence quoted in the title (the
            benchmark's setting, :func:`proteins.metrics.ramachandran_js`).
        labels: panel titles.
        title: figure title (the JS divergence is appended).
        log_density: ``(k, 2)`` angles (float64, radians) -> ``(k,)`` log-densities, e.g. the
            exact likelihood of a flow on :class:`manifolds.FlatTorus`; the grid points are
            wrapped into the model's range ``[model_angle_start, model_angle_start + 2 pi)``.
    """
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    hists = [ramachandran_histogram(a, bins) for a in (samples, real)]
    counts = [len(_numpy(a, "angles")) for a in (samples, real)]
    js = ramachandran_js(samples, real, js_bins) if min(counts) > 0 else math.nan
    positive = [h[h > 0] for h in hists if (h > 0).any()]
    low = min(float(p.min()) for p in positive) if positive else 1e-6
    high = max(float(p.max()) for p in positive) if positive else 1.0
    norm = LogNorm(vmin=low, vmax=max(high, low * 1.0001))
    panels = 2 if log_density is None else 3
    figure = Figure(figsize=(10.5 if panels == 2 else 15.0, 4.6))
    all_axes = figure.subplots(1, panels, sharey=True)
    axes = all_axes[:2]
    edges = np.linspace(-180.0, 180.0, bins + 1)
    mesh = None
    for ax, hist, label, n in zip(axes, hists, labels, counts):
        shown = np.ma.masked_where(hist <= 0, hist)  # empty cells stay white
        mesh = ax.pcolormesh(edges, edges, shown.T, norm=norm, cmap="viridis", rasterized=True)
        ax.set_title(f"{label} (n = {n})")
        ax.set_xlabel(r"$\phi$ (deg)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
        ax.set_aspect("equal")
    axes[0].set_ylabel(r"$\psi$ (deg)")
    assert mesh is not None  # two panels were drawn
    figure.colorbar(mesh, ax=list(axes), label="fraction of residues", shrink=0.9)
    if log_density is not None:
        from rfm.geospatial_plots import evaluate_log_density, log_density_mesh

        grid_edges = np.linspace(-math.pi, math.pi, grid_size + 1)
        centres = 0.5 * (grid_edges[:-1] + grid_edges[1:])
        phi, psi = np.meshgrid(centres, centres, indexing="xy")  # rows: psi, columns: phi
        grid = np.stack((phi, psi), axis=-1).reshape(-1, 2)
        wrapped = np.mod(grid - model_angle_start, 2 * math.pi) + model_angle_start
        values = evaluate_log_density(log_density, torch.from_numpy(wrapped)).reshape(phi.shape)
        density_axes = all_axes[2]
        log_density_mesh(figure, density_axes, np.degrees(grid_edges), np.degrees(grid_edges), values, shrink=0.9)
        density_axes.set_title("model log-density")
        density_axes.set_xlabel(r"$\phi$ (deg)")
        density_axes.set_aspect("equal")
    figure.suptitle(
        f"{title + ': ' if title else ''}Jensen-Shannon divergence {js:.3f} nats ({js_bins}x{js_bins} cells)"
    )
    return save_figure(figure, path, dpi=dpi)


def fit_rg_prefactor(
    lengths: torch.Tensor | np.ndarray, rg: torch.Tensor | np.ndarray, exponent: float = RG_EXPONENT
) -> float:
    r"""Least-squares prefactor :math:`a = \sum_i R_i L_i^\nu / \sum_i L_i^{2\nu}` of
    :math:`R_g = a L^\nu` (fixed exponent), e.g. about 2.2 A for compact real domains."""
    lengths, rg = _numpy(lengths, "lengths"), _numpy(rg, "rg")
    if lengths.shape != rg.shape or lengths.ndim != 1 or len(lengths) == 0:
        raise ValueError(
            f"lengths and rg must be non-empty 1-D arrays of the same shape, got {lengths.shape} and {rg.shape}"
        )
    keep = np.isfinite(rg) & (lengths > 0)
    if not keep.any():
        raise ValueError("rg has no finite value for a positive length")
    powered = lengths[keep] ** exponent
    return float((rg[keep] * powered).sum() / (powered**2).sum())


def plot_rg_vs_length(
    sets: Mapping[str, tuple],
    path: str | Path,
    *,
    reference: str = "real",
    exponent: float = RG_EXPONENT,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Radius of gyration against chain length, one scatter per set, and the reference curve
    :math:`R_g = a L^{0.4}` fitted (:func:`fit_rg_prefactor`) to the set named ``reference``.

    Args:
        sets: ``{name: (lengths, rg)}`` with two ``(n,)`` arrays each (real residue counts and
            :func:`proteins.metrics.radius_of_gyration` in Angstrom); the order is the legend's.
        path: output PNG.
        reference: the set the curve is fitted to (no curve if absent).
        exponent: the fixed exponent of the curve.
    """
    if not sets:
        raise ValueError("sets must contain at least one (lengths, rg) pair")
    figure = Figure(figsize=(6.4, 4.8))
    ax = figure.subplots()
    markers = "os^Dv<>p"
    all_lengths = []
    for k, (name, pair) in enumerate(sets.items()):
        if len(pair) != 2:
            raise ValueError(f"sets[{name!r}] must be a (lengths, rg) pair")
        lengths, rg = _numpy(pair[0], f"sets[{name!r}] lengths"), _numpy(pair[1], f"sets[{name!r}] rg")
        if lengths.shape != rg.shape or lengths.ndim != 1:
            raise ValueError(
                f"sets[{name!r}] lengths and rg must be 1-D of the same shape, got {lengths.shape} and {rg.shape}"
            )
        # equal lengths overlap exactly: a small horizontal jitter keeps the points visible
        jitter = np.random.default_rng(k).uniform(-0.8, 0.8, len(lengths))
        ax.scatter(lengths + jitter, rg, s=14, alpha=0.6, marker=markers[k % len(markers)], label=name, linewidths=0)
        all_lengths.append(lengths)
    if reference in sets:
        reference_lengths, reference_rg = sets[reference]  # a pair: checked above
        a = fit_rg_prefactor(reference_lengths, reference_rg, exponent=exponent)
        span = np.concatenate(all_lengths)
        grid = np.linspace(max(1.0, span.min() * 0.9), span.max() * 1.1, 200)
        ax.plot(grid, a * grid**exponent, "k--", lw=1.2, label=rf"{reference} fit $R_g = {a:.2f}\,L^{{{exponent:g}}}$")
    ax.set_xlabel("length L (residues)")
    ax.set_ylabel(r"$R_g$ of CA ($\AA$)")
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return save_figure(figure, path, dpi=dpi)


def plot_ss_composition(
    rows: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str | None = None, dpi: int = 150
) -> Path:
    """Stacked horizontal bars of helix / strand / coil fractions, one bar per row.

    Args:
        rows: ``{row name: {"helix": f, "strand": f, "coil": f}}`` (e.g. model, real,
            baselines), as returned by :func:`proteins.metrics.ss_fractions`; drawn top to
            bottom in the given order.
        path: output PNG.
    """
    if not rows:
        raise ValueError("rows must contain at least one composition")
    names = list(rows)
    states = (("helix", SS_HELIX), ("strand", SS_STRAND), ("coil", SS_COIL))
    values = np.array([[float(rows[name].get(state, math.nan)) for state, _ in states] for name in names])
    if not np.isfinite(values).all():
        bad = names[int(np.argwhere(~np.isfinite(values))[0, 0])]
        raise ValueError(f"rows[{bad!r}] must give finite 'helix', 'strand' and 'coil' fractions")
    figure = Figure(figsize=(6.4, 0.6 * len(names) + 1.4))
    ax = figure.subplots()
    y = np.arange(len(names))[::-1]
    left = np.zeros(len(names))
    for column, (state, code) in enumerate(states):
        ax.barh(y, values[:, column], left=left, color=SS_COLOURS[code], label=state, edgecolor="white")
        for yy, lo, v in zip(y, left, values[:, column]):
            if v >= 0.06:  # label segments wide enough to hold the text
                ax.text(lo + v / 2, yy, f"{v:.2f}", ha="center", va="center", fontsize=8)
        left += values[:, column]
    ax.set_yticks(y, names)
    ax.set_xlim(0, max(1.0, float(left.max())))
    ax.set_xlabel("fraction of residues (DSSP, 3 states)")
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False, fontsize=8)
    if title:
        ax.set_title(title, pad=22)
    figure.tight_layout()
    return save_figure(figure, path, dpi=dpi)


def plot_ca_traces(
    atoms: torch.Tensor | np.ndarray,
    codes: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    mask: torch.Tensor | np.ndarray | None = None,
    count: int = 4,
    titles: Sequence[str] | None = None,
    dpi: int = 150,
) -> Path:
    """3-D CA traces of the first ``count`` structures, each bond coloured by the secondary
    structure of its first residue (helix red, strand yellow, coil grey).

    Args:
        atoms: ``(B, L, A, 3)`` backbone atoms (CA = atom 1) or ``(B, L, 3)`` CA traces.
        codes: ``(B, L)`` codes from :func:`proteins.metrics.secondary_structure`.
        path: output PNG.
        mask: optional bool ``(B, L)``; bonds touching padding are not drawn.
        count: number of structures drawn (at most B), in a row.
        titles: optional panel titles.
    """
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    x = _numpy(atoms, "atoms")
    if x.ndim == 4 and x.shape[2] >= 2 and x.shape[3] == 3:
        ca = x[:, :, 1]
    elif x.ndim == 3 and x.shape[2] == 3:
        ca = x
    else:
        raise ValueError(f"atoms must have shape (B, L, A, 3) or (B, L, 3), got {x.shape}")
    codes = _numpy(codes, "codes", np.int64)
    if codes.shape != ca.shape[:2]:
        raise ValueError(f"codes must have shape {ca.shape[:2]}, got {codes.shape}")
    real = np.ones(ca.shape[:2], dtype=bool) if mask is None else _numpy(mask, "mask", bool)
    if real.shape != ca.shape[:2]:
        raise ValueError(f"mask must have shape {ca.shape[:2]}, got {real.shape}")
    count = min(count, len(ca))
    if count < 1:
        raise ValueError("count must be >= 1 and atoms must hold at least one structure")
    figure = Figure(figsize=(3.2 * count, 3.4))
    for b in range(count):
        ax = figure.add_subplot(1, count, b + 1, projection="3d")
        bond = real[b, :-1] & real[b, 1:]
        points = ca[b] - ca[b][real[b]].mean(0)
        segments = np.stack([points[:-1], points[1:]], axis=1)[bond]
        colours = [SS_COLOURS.get(int(c), SS_COLOURS[SS_COIL]) for c in codes[b, :-1][bond]]
        ax.add_collection3d(Line3DCollection(segments, colors=colours, linewidths=2.0))
        shown = points[real[b]]
        half = float(np.abs(shown).max()) if len(shown) else 1.0
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-half, half)  # equal scales on all axes: no distortion
        ax.set_box_aspect((1, 1, 1), zoom=1.25)
        ax.set_axis_off()
        ax.set_title(
            titles[b] if titles is not None and b < len(titles) else f"#{b} (L = {int(real[b].sum())})", fontsize=9
        )
    figure.subplots_adjust(left=0.0, right=1.0, bottom=0.06, top=0.94, wspace=0.0)
    figure.legend(
        handles=[_patch(SS_COLOURS[c], n) for c, n in ((SS_HELIX, "helix"), (SS_STRAND, "strand"), (SS_COIL, "coil"))],
        loc="lower center",
        ncols=3,
        frameon=False,
        fontsize=8,
    )
    return save_figure(figure, path, dpi=dpi)


def _patch(colour: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([0], [0], color=colour, lw=3, label=label)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


#: ``(key, label)`` of the metrics a quality-against-compute curve shows by default
QUALITY_CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("ca_ca_within_0.1", "CA-CA within 0.1 A of 3.80"),
    ("clash_rate", "clash rate"),
    ("helix", "helix fraction"),
    ("strand", "strand fraction"),
    ("ramachandran_js", "Ramachandran JS (nats)"),
    ("w_ca_3", "W1 of CA(i, i+3) (A)"),
)


def plot_quality_curve(
    curve: Sequence[Mapping[str, float]],
    real: Mapping[str, float],
    path: str | Path,
    *,
    metrics: Sequence[tuple[str, str]] = QUALITY_CURVE_METRICS,
    targets: Mapping[str, float] | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Each metric of a model's samples against the residues seen in training (log axis): one
    point per snapshot of the run, the held-out real value as a horizontal line (the floor a
    perfect model reaches) and, where ``targets`` has the metric, the target as a dashed line.

    Args:
        curve: the snapshots in training order, each with ``residues_seen`` and the metrics.
        real: the metrics of held-out real structures (distances: the half-vs-half floor).
        metrics: ``(key, label)`` of the panels.
    """
    if not curve:
        raise ValueError("curve must hold at least one point")
    x = np.array([float(point["residues_seen"]) for point in curve])
    if not (x > 0).all():
        raise ValueError(f"residues_seen must be positive, got {x.tolist()}")
    columns = 3
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.3 * rows), layout="constrained")
    axes_grid = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for axes, (key, label) in zip(axes_grid, metrics):
        axes.plot(x, [float(point[key]) for point in curve], "o-", color="#1f77b4", label="model")
        if key in real:
            axes.axhline(float(real[key]), color="#2ca02c", label="real (held out)")
        if targets is not None and key in targets:
            axes.axhline(float(targets[key]), color="#d62728", linestyle="--", label="target")
        axes.set_xscale("log")
        axes.set_xlabel("residues seen in training")
        axes.set_title(label)
    for axes in axes_grid[len(metrics) :]:
        axes.set_visible(False)
    axes_grid[0].legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path, dpi=dpi)


def write_benchmark_plots(
    sets: Mapping[str, Sequence[tuple[torch.Tensor, torch.Tensor | None]]],
    out_dir: str | Path,
    *,
    title: str | None = None,
    real: str = "real (held out)",
    model: str = "model",
    traces: int = 4,
    dpi: int = 150,
) -> list[Path]:
    """The benchmark's figures from its sets of backbones.

    Args:
        sets: ``{row name: [(atoms, mask), ...]}``, one ``(B, L, 4, 3)`` batch (Angstrom) and
            bool ``(B, L)`` mask (or None) per evaluated length, e.g. the model, the held-out
            real crops and the baselines.
        out_dir: folder of the PNG files (created).
        title: prefix of the figure titles.
        real: the row of real structures (Ramachandran reference, R_g fit).
        model: the row whose CA traces are drawn.
        traces: number of traces (taken round-robin over the lengths).

    Writes ``ramachandran_<row>.png`` for every row other than ``real`` (that row against
    ``real``), ``rg_vs_length.png``, ``ss_composition.png`` and, if ``model`` is a row,
    ``ca_traces.png``; returns their paths.
    """
    if real not in sets:
        raise ValueError(f"sets must contain the real row {real!r}, got rows {list(sets)}")
    out_dir = Path(out_dir)
    prefix = f"{title}: " if title else ""
    angles, rg, codes_by_row = {}, {}, {}
    for row, batches in sets.items():
        row_angles, lengths, radii, codes = [], [], [], []
        for atoms, mask in batches:
            full = torch.ones(atoms.shape[:2], dtype=torch.bool) if mask is None else mask
            row_angles.append(phi_psi(atoms, mask).detach().cpu().double())
            lengths.append(full.sum(-1).double().cpu())
            radii.append(radius_of_gyration(atoms, mask).detach().cpu().double())
            codes.append(secondary_structure(atoms, mask))
        angles[row] = torch.cat(row_angles) if row_angles else torch.zeros(0, 2, dtype=torch.float64)
        rg[row] = (torch.cat(lengths).numpy(), torch.cat(radii).numpy()) if lengths else (np.zeros(0), np.zeros(0))
        codes_by_row[row] = codes
    paths = []
    for row in sets:
        if row != real and len(angles[row]) and len(angles[real]):
            paths.append(
                plot_ramachandran_pair(
                    angles[row],
                    angles[real],
                    out_dir / f"ramachandran_{_slug(row)}.png",
                    labels=(row, real),
                    title=f"{prefix}{row}",
                    dpi=dpi,
                )
            )
    paths.append(
        plot_rg_vs_length(
            {row: pair for row, pair in rg.items() if len(pair[0])},
            out_dir / "rg_vs_length.png",
            reference=real,
            title=f"{prefix}radius of gyration",
            dpi=dpi,
        )
    )
    compositions = {}
    for row, codes in codes_by_row.items():
        flat = torch.cat([c.reshape(-1) for c in codes]) if codes else torch.zeros(0, dtype=torch.long)
        if bool((flat >= 0).any()):
            compositions[row] = ss_fractions(flat)
    paths.append(
        plot_ss_composition(compositions, out_dir / "ss_composition.png", title=f"{prefix}secondary structure", dpi=dpi)
    )
    if model in sets and sets[model]:
        batches = sets[model]
        picks = [(k % len(batches), k // len(batches)) for k in range(traces)]
        picks = [(b, i) for b, i in picks if i < len(batches[b][0])]
        if picks:
            length = max(batches[b][0].shape[1] for b, _ in picks)
            atoms = torch.full((len(picks), length, 3), math.nan, dtype=torch.float64)
            trace_codes = torch.full((len(picks), length), -1, dtype=torch.long)
            mask = torch.zeros(len(picks), length, dtype=torch.bool)
            for k, (b, i) in enumerate(picks):
                batch_atoms, batch_mask = batches[b]
                n = batch_atoms.shape[1]
                atoms[k, :n] = batch_atoms[i, :, 1].detach().cpu().double()
                trace_codes[k, :n] = codes_by_row[model][b][i]
                mask[k, :n] = True if batch_mask is None else batch_mask[i].cpu()
            paths.append(
                plot_ca_traces(
                    atoms,
                    trace_codes,
                    out_dir / "ca_traces.png",
                    mask=mask,
                    count=len(picks),
                    titles=[f"{model} L = {int(m.sum())}" for m in mask],
                    dpi=dpi,
                )
            )
    return paths
