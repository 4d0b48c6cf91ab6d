"""Building a structure dataset: structure files -> backbone segments (deduplicated, clustered by
sequence identity) -> one ``.npz`` that :class:`proteins.data.StructureDataset` loads.

:func:`build_structure_dataset` keeps every segment of at least ``min_length`` residues, drops
segments whose sequence equals an earlier one, clusters the rest by sequence identity
(:func:`proteins.clustering.cluster_sequences`, single linkage at 50 %; segments cut from one
chain also share a cluster) and writes the file atomically. ``rdfm dataset build`` runs
:func:`build_from_folders`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from gm.files import atomic_savez
from proteins.clustering import IDENTITY_DEFINITION, _check_identity, cluster_sequences
from proteins.sources import iter_folder_structures, name_some
from proteins.structures import BackboneChain, _backbone_chains, _check_filters

__all__ = ["FORMAT_VERSION", "BuildReport", "build_structure_dataset", "build_from_folders"]

#: Version of the ``.npz`` layout written by :func:`build_structure_dataset`.
FORMAT_VERSION = 1

# --------------------------------------------------------------------------------------------
# Building the dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_structure_dataset` read and wrote.

    Attributes:
        path: the ``.npz`` written.
        files: structure files read.
        files_without_chains: files that gave no segment passing the filters (unparsable, no
            protein, or only short segments).
        chains: segments kept (distinct sequences).
        duplicates: segments dropped because an earlier one had the same sequence.
        clusters: sequence clusters among the kept segments.
        residues: residues in the kept segments.
        largest_clusters: sizes (in segments) of the three largest clusters, largest first.
        seconds: wall time of the whole build.
        clustering_seconds: wall time of :func:`cluster_sequences`.
        unusable_files: names of the ``files_without_chains`` files, in reading order.
    """

    path: Path
    files: int
    files_without_chains: int
    chains: int
    duplicates: int
    clusters: int
    residues: int
    largest_clusters: tuple[int, ...]
    seconds: float
    clustering_seconds: float
    unusable_files: tuple[str, ...] = ()

    def summary(self) -> str:
        """A one-line human-readable summary; it names the first few files without usable chains."""
        unusable = f": {name_some(self.unusable_files)}" if self.unusable_files else ""
        return (
            f"{self.files} structure files ({self.files_without_chains} without usable chains{unusable}), "
            f"{self.chains} chains kept, {self.duplicates} duplicate-sequence chains dropped, "
            f"{self.residues} residues, {self.clusters} clusters (largest {list(self.largest_clusters)} chains); "
            f"built in {self.seconds:.1f} s (clustering {self.clustering_seconds:.1f} s) -> {self.path}"
        )


def build_structure_dataset(
    structures: Iterable[tuple[str, str]],
    out: str | Path,
    *,
    min_length: int = 40,
    max_ca_gap: float = 4.2,
    identity: float = 0.5,
) -> BuildReport:
    """Read structures, keep backbone segments, deduplicate, cluster and write one ``.npz``.

    Segments (see :func:`read_backbone_chains`) whose sequence equals an earlier segment's are
    dropped (the first one read is kept). The rest are clustered by :func:`cluster_sequences`;
    in addition, segments cut from the same chain of the same file are put in one cluster
    (they are one protein, and a split must not put its halves in training and test).

    The file holds ``atoms`` (total residues, 4, 3) float32 (N, CA, C, O; O NaN where absent),
    per chain ``chain_offsets`` (chains + 1) int64, ``sequences``, ``sources``, ``chain_ids``
    (str), ``starts`` (first residue number) and ``cluster`` int64, and ``build_info``, a JSON
    string with the filters, the identity definition and the gemmi / biotite versions. It is
    written to a temporary file and renamed, so an interrupted build leaves no partial file.

    Args:
        structures: ``(name, text)`` pairs, e.g. from :func:`iter_folder_structures` or
            :func:`iter_archive_structures`; the name's suffix picks the format.
        out: the ``.npz`` to write (its folder is created if needed).
        min_length: shortest segment kept, in residues.
        max_ca_gap: CA-CA distance (Angstrom) above which a chain is cut.
        identity: sequence-identity threshold for clustering, in (0, 1].

    Returns:
        The counts of the build.

    Raises:
        ValueError: for bad filter arguments, or if no structure gives a usable chain (the
            message names the first few files and why each gave none).
    """
    _check_filters(min_length, max_ca_gap)
    _check_identity(identity)
    t0 = time.perf_counter()
    out = Path(out)
    kept: list[BackboneChain] = []
    first_with: dict[str, int] = {}  # sequence -> index of its kept chain
    groups: dict[tuple[str, str], list[int]] = {}  # (file, chain id) -> kept chains of that chain
    files = duplicates = 0
    unusable: list[tuple[str, str]] = []  # (file, why) of the files without a kept segment
    for name, text in structures:
        files += 1
        chains, why = _backbone_chains(name, text, min_length, max_ca_gap)
        if not chains:
            unusable.append((name, why))
        for chain in chains:
            index = first_with.get(chain.sequence)
            if index is None:
                index = first_with[chain.sequence] = len(kept)
                kept.append(chain)
            else:
                duplicates += 1
            # A duplicate still ties the other segments of its chain to the kept copy's cluster.
            groups.setdefault((chain.source, chain.chain_id), []).append(index)
    if not kept:
        # Each reason names its file and says what was wrong with it (unparsable, no backbone, too short).
        reasons = f" ({name_some([why for _, why in unusable])})" if unusable else ""
        raise ValueError(
            f"no structure among {files} files has a backbone segment of >= {min_length} residues{reasons}"
        )
    links = [(members[0], other) for members in groups.values() for other in members[1:]]
    t1 = time.perf_counter()
    cluster = cluster_sequences([chain.sequence for chain in kept], identity, links=links)
    clustering_seconds = time.perf_counter() - t1

    lengths = np.array([len(chain) for chain in kept], dtype=np.int64)
    import biotite
    import gemmi

    info = dict(
        format_version=FORMAT_VERSION,
        min_length=int(min_length),
        max_ca_gap=float(max_ca_gap),
        identity=float(identity),
        identity_definition=IDENTITY_DEFINITION,
        cluster_rule="single linkage; segments of one chain of one file share a cluster",
        gemmi=cast(Any, gemmi).__version__,  # gemmi's stubs omit __version__
        biotite=biotite.__version__,
    )
    arrays = dict(
        atoms=np.concatenate([chain.atoms for chain in kept]).astype(np.float32),
        chain_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        sequences=np.array([chain.sequence for chain in kept]),
        sources=np.array([chain.source for chain in kept]),
        chain_ids=np.array([chain.chain_id for chain in kept]),
        starts=np.array([chain.start for chain in kept], dtype=np.int64),
        cluster=cluster,
        build_info=np.array(json.dumps(info)),
    )
    atomic_savez(out, arrays)
    sizes = np.sort(np.bincount(cluster))[::-1]
    return BuildReport(
        path=out,
        files=files,
        files_without_chains=len(unusable),
        chains=len(kept),
        duplicates=duplicates,
        clusters=len(sizes),
        residues=int(lengths.sum()),
        largest_clusters=tuple(int(s) for s in sizes[:3]),
        seconds=time.perf_counter() - t0,
        clustering_seconds=clustering_seconds,
        unusable_files=tuple(name for name, _ in unusable),
    )


def build_from_folders(
    folders: Iterable[str | Path],
    out: str | Path,
    *,
    min_length: int = 40,
    max_ca_gap: float = 4.2,
    identity: float = 0.5,
) -> BuildReport:
    """:func:`build_structure_dataset` over every structure file under the given folders.

    Args:
        folders: folders searched recursively (see :func:`iter_folder_structures`).
        out: the ``.npz`` to write.
        min_length: shortest segment kept, in residues.
        max_ca_gap: CA-CA distance (Angstrom) above which a chain is cut.
        identity: sequence-identity threshold for clustering.

    Raises:
        ValueError: if a folder does not exist, or as :func:`build_structure_dataset`.
    """
    paths = [Path(folder) for folder in folders]
    for path in paths:  # fail before reading anything
        if not path.is_dir():
            raise ValueError(f"folder {path}: not a folder")
    structures = (item for path in paths for item in iter_folder_structures(path))
    return build_structure_dataset(structures, out, min_length=min_length, max_ca_gap=max_ca_gap, identity=identity)
