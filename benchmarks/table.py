"""``python -m benchmarks table [--runs runs/] [--out FILE]``: results JSONs -> markdown tables.

Records (see :mod:`benchmarks.results`) are grouped by benchmark, dataset and method; each
cell shows the mean ± sample standard deviation (``ddof = 1``) over seeds and the number of
seeds. Published numbers are printed beside ours as anchors; they are quoted from the papers,
not recomputed. If the same (benchmark, dataset, method, seed) appears in several files, the
record with the latest timestamp is used and the others are reported on stderr.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import is_finite_number, load_results
from gm.files import atomic_write

# Earth: test NLL, lower is better. Columns: Volcano, Earthquake, Flood, Fire.
EARTH_DATASETS: tuple[tuple[str, str], ...] = (
    ("volcano", "Volcano"),
    ("earthquake", "Earthquake"),
    ("flood", "Flood"),
    ("fire", "Fire"),
)
EARTH_ANCHORS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("Riemannian CNF (Mathieu & Nickel 2020)", (-6.05, 0.14, 1.11, -0.80)),
    ("Moser Flow (Rozen et al. 2021)", (-4.21, -0.16, 0.57, -1.28)),
    ("RSGM (De Bortoli et al. 2022)", (-4.92, -0.19, 0.45, -1.33)),
    ("RFM (Chen & Lipman 2024)", (-7.93, -0.28, 0.42, -1.86)),
)
# SO(3) mixtures of M wrapped normals: test log-likelihood, higher is better.
SO3_ANCHORS: dict[int, float] = {16: 0.89, 32: 0.20, 64: -0.49}
SO3_ANCHOR_NAME = "RSGM (De Bortoli et al. 2022)"
PROTEIN_CLASSES: tuple[tuple[str, str], ...] = (
    ("general", "General"),
    ("glycine", "Glycine"),
    ("proline", "Proline"),
    ("prepro", "Pre-Pro"),
)
METHOD_LABELS: dict[str, str] = {
    "rfm": "ours (rdfm RFM)",
    "vonmises": "von Mises mixture (EM, K chosen on validation)",
}
TEXT_METRICS: tuple[tuple[str, str], ...] = (
    ("ar_bpc", "autoregressive"),
    ("masked_bpc", "masked"),
    ("block4_bpc", "block b=4"),
    ("block8_bpc", "block b=8"),
    ("block16_bpc", "block b=16"),
    ("unigram_bpc", "unigram"),
    ("ratio", "masked / AR (target <= 1.35)"),
    ("block4_ratio", "block b=4 / AR (target <= 1.10)"),
)


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of one metric over seeds.

    Attributes:
        mean: mean of the finite values (NaN if there are none).
        std: sample standard deviation (``ddof = 1``) of the finite values; NaN if fewer than 2.
        n: number of finite values.
        n_nonfinite: number of NaN / infinite values left out (failed or diverged runs).
    """

    mean: float
    std: float
    n: int
    n_nonfinite: int = 0

    def format(self, digits: int = 2, show_n: bool = True) -> str:
        """``"mean ± std (n=k)"`` (or ``"mean ± std"``); ``"—"`` when there is no value at all."""
        if self.n == 0:
            return "—" if self.n_nonfinite == 0 else f"non-finite (n={self.n_nonfinite})"
        text = f"{self.mean:.{digits}f}"
        if self.n > 1:
            text += f" ± {self.std:.{digits}f}"
        notes = [f"n={self.n}"] if show_n else []
        if self.n_nonfinite:
            notes.append(f"{self.n_nonfinite} non-finite")
        return f"{text} ({', '.join(notes)})" if notes else text


def summarize(values: Iterable[Any]) -> Summary:
    """:class:`Summary` of ``values``; missing values (``None``) are skipped, non-numbers and
    non-finite values are counted apart."""
    values = [v for v in values if v is not None]
    finite = [float(v) for v in values if is_finite_number(v)]
    n_bad = len(values) - len(finite)
    if not finite:
        return Summary(math.nan, math.nan, 0, n_bad)
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return Summary(statistics.fmean(finite), std, len(finite), n_bad)


def dataset_key(benchmark: str, dataset: str) -> str:
    """Canonical dataset name: lower case alphanumerics (``Pre-Pro`` -> ``prepro``,
    ``M=16`` -> ``m16``)."""
    key = re.sub(r"[^0-9a-z]", "", dataset.lower())
    if benchmark == "so3":
        digits = re.findall(r"\d+", key)
        key = f"m{digits[0]}" if digits else key
    return key


def deduplicate(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Keep one record per (benchmark, dataset, method, seed): the latest by timestamp.

    Returns:
        the kept records and one note per dropped record.
    """
    best: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    notes: list[str] = []
    for record in records:
        key = (
            record["benchmark"],
            dataset_key(record["benchmark"], record["dataset"]),
            record.get("method", "rfm"),
            record["seed"],
        )
        kept = best.get(key)
        if kept is None:
            best[key] = record
            continue
        newer, older = (
            (record, kept) if str(record.get("timestamp", "")) >= str(kept.get("timestamp", "")) else (kept, record)
        )
        best[key] = newer
        notes.append(f"duplicate {key}: using {newer.get('_path', '?')}, ignoring {older.get('_path', '?')}")
    return list(best.values()), notes


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _ordered_keys(canonical: Sequence[str], present: Iterable[str]) -> list[str]:
    extra = sorted(set(present) - set(canonical))
    return list(canonical) + extra


def _group(records: Iterable[dict[str, Any]], benchmark: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(method, dataset key) -> records of ``benchmark``, sorted by seed."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["benchmark"] == benchmark:
            key = (record.get("method", "rfm"), dataset_key(benchmark, record["dataset"]))
            groups[key].append(record)
    for group in groups.values():
        group.sort(key=lambda r: r["seed"])
    return groups


def _values(group: Sequence[dict[str, Any]], field: str) -> list[Any]:
    return [r.get(field) for r in group]  # a missing field is not a failed run


def _budget(record: dict[str, Any]) -> tuple[float | None, int | None] | None:
    """``(minutes, steps)`` of a record's training budget (either may be ``None``: a record of a
    step budget has no time limit); ``None`` for a record without one (an anchor's)."""
    minutes = float(record["budget_minutes"]) if is_finite_number(record.get("budget_minutes")) else None
    steps = int(record["budget_steps"]) if is_finite_number(record.get("budget_steps")) else None
    return None if minutes is None and steps is None else (minutes, steps)


def _budget_label(budget: tuple[float | None, int | None]) -> str:
    minutes, steps = budget
    parts = ([] if steps is None else [f"{steps} steps"]) + ([] if minutes is None else [f"{minutes:g} min"])
    return " or ".join(parts)


def _budget_order(budget: tuple[float | None, int | None]) -> tuple[float, float]:
    minutes, steps = budget
    return (math.inf if steps is None else steps, math.inf if minutes is None else minutes)


def _provenance(groups: dict[tuple[str, str], list[dict[str, Any]]], metric: str) -> list[str]:
    """Run details (seeds, budget, steps, time) and the commands that produced the records.

    Budgets are shown in minutes (column "budget (min)") while every record has a wall-clock
    budget only; once a record has a step budget (``budget_steps``), each cell names its unit
    ("2000 steps", "15 min", "2000 steps or 15 min")."""
    budgets_by_group: dict[tuple[str, str], set[tuple[float | None, int | None]]] = {}
    commands: list[str] = []
    for key, group in sorted(groups.items()):
        budgets_by_group[key] = {b for b in map(_budget, group) if b is not None}
        for record in group:
            command = record.get("command")
            if command and command not in commands:
                commands.append(command)
    budgets = set().union(*budgets_by_group.values())
    minutes_only = all(steps is None for _, steps in budgets)

    def cell(group_budgets: set[tuple[float | None, int | None]]) -> str:
        if minutes_only:
            return ", ".join(f"{m:g}" for m in sorted(m for m, _ in group_budgets)) or "—"
        return ", ".join(_budget_label(b) for b in sorted(group_budgets, key=_budget_order)) or "—"

    rows = []
    for (method, key), group in sorted(groups.items()):
        rows.append(
            (
                method,
                key,
                " ".join(str(r["seed"]) for r in group),
                cell(budgets_by_group[(method, key)]),
                summarize(_values(group, "steps")).format(0, show_n=False),
                summarize(_values(group, "wall_time_s")).format(0, show_n=False),
                summarize(_values(group, "val_nll")).format(show_n=False),
                summarize(_values(group, metric)).format(show_n=False),
            )
        )
    metric_names = {"test_nll": "test NLL", "masked_bpc": "masked bpc"}
    header = [
        "method",
        "dataset",
        "seeds",
        "budget (min)" if minutes_only else "budget",
        "steps",
        "wall time (s)",
        "val NLL",
        metric_names.get(metric, metric),
    ]
    lines = ["", "<details><summary>runs</summary>", ""]
    lines += _markdown_table(header, rows)
    if len(budgets) > 1:
        if minutes_only:
            lines += ["", f"Note: these records mix budgets of {sorted(m for m, _ in budgets)} minutes."]
        else:
            labels = ", ".join(_budget_label(b) for b in sorted(budgets, key=_budget_order))
            lines += ["", f"Note: these records mix budgets: {labels}."]
    if commands:
        lines += ["", "Commands:", ""] + [f"    {c}" for c in commands]
    lines += ["", "</details>"]
    return lines


def _method_rows(
    groups: dict[tuple[str, str], list[dict[str, Any]]], keys: Sequence[str], metric: str, digits: int
) -> list[list[str]]:
    methods = sorted({method for method, _ in groups}, key=lambda m: (m != "vonmises", m != "rfm", m))
    return [
        [METHOD_LABELS.get(method, method)]
        + [summarize(_values(groups.get((method, key), []), metric)).format(digits) for key in keys]
        for method in methods
    ]


def _paired_row(
    groups: dict[tuple[str, str], list[dict[str, Any]]],
    keys: Sequence[str],
    method: str,
    anchor: str,
    metric: str,
    digits: int,
) -> list[str] | None:
    """``method - anchor`` per seed on the same split, mean ± std over the seeds both have, and
    how many of them ``method`` is lower on. Splits move both numbers by more than they differ,
    so the paired difference is the comparison that says who wins."""
    cells, any_pair = [], False
    for key in keys:
        ours = {r["seed"]: r.get(metric) for r in groups.get((method, key), [])}
        theirs = {r["seed"]: r.get(metric) for r in groups.get((anchor, key), [])}
        diffs = [
            float(ours[s]) - float(theirs[s])
            for s in sorted(ours.keys() & theirs.keys())
            if is_finite_number(ours[s]) and is_finite_number(theirs[s])
        ]
        if not diffs:
            cells.append("—")
            continue
        any_pair = True
        stats = summarize(diffs)
        cells.append(f"{stats.format(digits, show_n=False)} ({sum(d < 0 for d in diffs)}/{len(diffs)} lower)")
    if not any_pair:
        return None
    return [f"difference {method} - {anchor} (same split per seed)"] + cells


def earth_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the Earth table (test NLL; anchors first, then our methods)."""
    groups = _group(records, "earth")
    if not groups:
        return []
    keys = _ordered_keys([k for k, _ in EARTH_DATASETS], (k for _, k in groups))
    labels = dict(EARTH_DATASETS)
    header = ["method"] + [labels.get(k, k) for k in keys]
    rows = [[name] + [f"{v:.2f}" for v in values] + ["—"] * (len(keys) - len(values)) for name, values in EARTH_ANCHORS]
    rows += _method_rows(groups, keys, "test_nll", 2)
    lines = ["## Earth (S^2): test NLL, lower is better", ""]
    lines += _markdown_table(header, rows)
    lines += ["", "Anchors are quoted from the papers; ours: mean ± std over seeds (n seeds)."]
    return lines + _provenance(groups, "test_nll")


def proteins_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the protein (torus) table: test NLL per residue class."""
    groups = _group(records, "proteins")
    if not groups:
        return []
    keys = _ordered_keys([k for k, _ in PROTEIN_CLASSES], (k for _, k in groups))
    labels = dict(PROTEIN_CLASSES)
    header = ["method"] + [labels.get(k, k) for k in keys]
    lines = ["## Protein backbone dihedrals (torus): test NLL, lower is better", ""]
    rows = _method_rows(groups, keys, "test_nll", 3)  # classes differ by ~0.01
    paired = _paired_row(groups, keys, "rfm", "vonmises", "test_nll", 3)
    lines += _markdown_table(header, rows + ([paired] if paired else []))
    lines += [
        "",
        "Both rows are measured on the same seeded splits: mean ± std over seeds (n seeds); "
        "the last row is the per-seed difference (negative: RFM better) and the number of seeds where RFM is lower.",
    ]
    return lines + _provenance(groups, "test_nll")


def so3_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the SO(3) table: test log-likelihood beside RSGM and the truth."""
    groups = _group(records, "so3")
    if not groups:
        return []
    canonical = [f"m{m}" for m in SO3_ANCHORS]
    rows = []
    for method in sorted({m for m, _ in groups}, key=lambda m: (m != "rfm", m)):
        for key in _ordered_keys(canonical, (k for m, k in groups if m == method)):
            group = groups.get((method, key), [])
            if not group:
                continue
            m_value = int(key[1:]) if key[1:].isdigit() else None
            anchor = SO3_ANCHORS.get(m_value) if m_value is not None else None
            gaps = [
                r["true_test_loglik"] - r["test_loglik"]
                if is_finite_number(r.get("true_test_loglik")) and is_finite_number(r.get("test_loglik"))
                else math.nan
                for r in group
            ]
            rows.append(
                [
                    str(m_value) if m_value is not None else key,
                    METHOD_LABELS.get(method, method),
                    f"{anchor:.2f}" if anchor is not None else "—",
                    summarize(_values(group, "test_loglik")).format(),
                    summarize(_values(group, "true_test_loglik")).format(),
                    summarize(gaps).format(),
                ]
            )
    header = ["M", "method", SO3_ANCHOR_NAME, "model", "true mixture", "gap (true − model)"]
    lines = ["## SO(3) mixtures of wrapped normals: test log-likelihood, higher is better", ""]
    lines += _markdown_table(header, rows)
    lines += [
        "",
        'RSGM is quoted from its paper; "true mixture" is the generating density on the same '
        "test points, and the gap estimates KL(data || model).",
    ]
    return lines + _provenance(groups, "test_loglik")


def text_table(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the text table: bits per character of the models."""
    groups = _group(records, "text")
    if not groups:
        return []
    rows = []
    for (method, key), group in sorted(groups.items()):
        label = key if method == "rfm" else f"{key} ({method})"
        rows.append(
            [label, " ".join(str(r["seed"]) for r in group)]
            + [summarize(_values(group, field)).format(3) for field, _ in TEXT_METRICS]
        )
    header = ["dataset", "seeds"] + [
        name if field.endswith("ratio") else f"{name} (bpc)" for field, name in TEXT_METRICS
    ]
    lines = ["## Text: bits per character, lower is better", ""]
    lines += _markdown_table(header, rows)
    return lines + _provenance(groups, "masked_bpc")


def render_tables(records: Sequence[dict[str, Any]]) -> str:
    """All tables for ``records`` as one markdown document (empty sections are left out)."""
    records, _ = deduplicate(records)
    sections = [table(records) for table in (earth_table, proteins_table, so3_table, text_table)]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def main(argv: list[str]) -> int:
    """Print the markdown tables for the records under ``--runs``; optionally write ``--out``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks table",
        description="Turn benchmark results JSONs into markdown tables (with published anchors).",
    )
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="folder searched recursively")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)
    try:
        records = load_results(args.runs)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no result records found under {args.runs}", file=sys.stderr)
        return 1
    _, notes = deduplicate(records)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    text = render_tables(records)
    print(text, end="")
    if args.out is not None:
        atomic_write(args.out, text)
    return 0


__all__ = [
    "EARTH_ANCHORS",
    "EARTH_DATASETS",
    "PROTEIN_CLASSES",
    "SO3_ANCHORS",
    "Summary",
    "dataset_key",
    "deduplicate",
    "earth_table",
    "main",
    "proteins_table",
    "render_tables",
    "so3_table",
    "summarize",
    "text_table",
]
