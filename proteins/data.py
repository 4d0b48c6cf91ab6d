"""Protein structure datasets for backbone generative models.

:func:`build_structure_dataset` keeps every segment of at least ``min_length`` residues,
drops segments whose sequence equals an earlier one, clusters the rest by sequence identity
(:func:`cluster_sequences`, single linkage at 50 %; segments cut from one chain also share
a cluster) and writes one ``.npz`` file that :class:`StructureDataset` loads. Its splits
hold whole clusters, so no test chain has a close homologue in training.

This module holds the dataset (:class:`StructureDataset`: chains, crops, splits); the other pieces
live by concept, re-exported here: residue types (:mod:`proteins.residues`), archives and folders
of structure files (:mod:`proteins.sources`), reading backbone chains (:mod:`proteins.structures`),
sequence clustering (:mod:`proteins.clustering`) and building the ``.npz``
(:mod:`proteins.dataset_build`).

Coordinates are in Angstrom throughout; atoms are ordered :data:`BACKBONE_ATOMS` (N, CA, C, O).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from proteins.clustering import IDENTITY_DEFINITION, cluster_sequences, sequence_identity
from proteins.dataset_build import FORMAT_VERSION, BuildReport, build_from_folders, build_structure_dataset
from proteins.residues import (
    AMINO_ACIDS,
    BACKBONE_ATOMS,
    THREE_LETTER_CODES,
    UNKNOWN_RESIDUE,
    decode_residues,
    encode_sequence,
)
from proteins.sources import (
    STRUCTURE_FILE_PATTERN,
    STRUCTURE_SOURCES,
    ArchiveSource,
    fetch_sources,
    folder_structure_files,
    iter_archive_structures,
    iter_folder_structures,
    name_some,
)
from proteins.structures import BackboneChain, read_backbone_chains

__all__ = [
    "BACKBONE_ATOMS",
    "FORMAT_VERSION",
    "IDENTITY_DEFINITION",
    "STRUCTURE_FILE_PATTERN",
    "STRUCTURE_SOURCES",
    "AMINO_ACIDS",
    "THREE_LETTER_CODES",
    "UNKNOWN_RESIDUE",
    "encode_sequence",
    "decode_residues",
    "ArchiveSource",
    "BackboneChain",
    "BuildReport",
    "StructureChain",
    "StructureDataset",
    "build_from_folders",
    "bucket_edges",
    "build_structure_dataset",
    "cluster_sequences",
    "fetch_sources",
    "folder_structure_files",
    "iter_archive_structures",
    "iter_folder_structures",
    "name_some",
    "read_backbone_chains",
    "sequence_identity",
]

# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructureChain:
    """One chain of a :class:`StructureDataset`.

    Attributes:
        atoms: float32 tensor (L, 4, 3), N, CA, C, O in Angstrom (O NaN where absent).
        sequence: one-letter sequence.
        source: the file it was read from.
        chain_id: the author chain id.
        start: residue number of the first residue.
        cluster: its sequence cluster.
    """

    atoms: torch.Tensor
    sequence: str
    source: str
    chain_id: str
    start: int
    cluster: int

    def __len__(self) -> int:
        return len(self.sequence)


_REQUIRED_ARRAYS = ("atoms", "chain_offsets", "sequences", "sources", "chain_ids", "cluster")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def bucket_edges(
    buckets: Sequence[int], min_length: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(low, high, padded)`` of the crop lengths each usable bucket holds: bucket ``k`` takes
    lengths in ``(buckets[k-1], buckets[k]]`` within ``[min_length, max_length]`` and pads to
    ``buckets[k]``; buckets holding no length are dropped. A ``ValueError`` naming ``buckets``
    unless they are increasing positive integers whose largest reaches ``max_length``."""
    values = list(buckets) if isinstance(buckets, (list, tuple)) else None
    if (
        not values
        or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in values)
        or any(b <= a for a, b in zip(values, values[1:]))
    ):
        raise ValueError(f"buckets must be increasing positive integers, e.g. (64, 96, 128), got {buckets!r}")
    if values[-1] < max_length:
        raise ValueError(f"buckets must reach max_length={max_length}: the largest is {values[-1]}")
    lows = [min_length] + [max(a + 1, min_length) for a in values[:-1]]
    highs = [min(b, max_length) for b in values]
    kept = [(lo, hi, b) for lo, hi, b in zip(lows, highs, values) if lo <= hi]
    return cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple(torch.tensor(column) for column in zip(*kept)))


class StructureDataset:
    """Backbone chains with sequence clusters, as written by :func:`build_structure_dataset`.

    All chains share one atom tensor; subsets (:meth:`subset`, :meth:`split`) index into it
    without copying.

    Args:
        atoms: (total residues, 4, 3) N, CA, C, O coordinates in Angstrom.
        chain_offsets: (chains + 1,) int, chain i is ``atoms[offsets[i]:offsets[i + 1]]``.
        sequences: one-letter sequence of each chain.
        sources: source file of each chain.
        chain_ids: chain id of each chain.
        cluster: (chains,) int cluster of each chain.
        starts: (chains,) int residue number of each chain's first residue (default 1).
        info: build metadata.

    Raises:
        ValueError: if the arrays are inconsistent (naming the one at fault).
    """

    def __init__(
        self,
        atoms,
        chain_offsets,
        sequences: Sequence[str],
        sources: Sequence[str],
        chain_ids: Sequence[str],
        cluster,
        starts=None,
        info: dict | None = None,
    ):
        atoms = torch.as_tensor(np.asarray(atoms, dtype=np.float32))
        offsets = np.asarray(chain_offsets, dtype=np.int64)
        if atoms.ndim != 3 or atoms.shape[1:] != (4, 3):
            raise ValueError(f"atoms must have shape (residues, 4, 3), got {tuple(atoms.shape)}")
        if (
            offsets.ndim != 1
            or len(offsets) < 2
            or offsets[0] != 0
            or offsets[-1] != len(atoms)
            or (np.diff(offsets) < 1).any()
        ):
            raise ValueError(
                "chain_offsets must increase strictly from 0 to the number of residues "
                f"({len(atoms)}), got {offsets[:3].tolist()}...{offsets[-2:].tolist()}"
            )
        n = len(offsets) - 1
        begin, length = offsets[:-1], np.diff(offsets)
        starts = np.ones(n, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
        fields = dict(
            sequences=np.asarray(sequences, dtype=str),
            sources=np.asarray(sources, dtype=str),
            chain_ids=np.asarray(chain_ids, dtype=str),
            cluster=np.asarray(cluster, dtype=np.int64),
            starts=starts,
        )
        for key, value in fields.items():
            if value.shape != (n,):
                raise ValueError(f"{key} must have one entry per chain ({n}), got shape {value.shape}")
        if not (np.char.str_len(fields["sequences"]) == length).all():
            raise ValueError("sequences: lengths differ from the chain lengths given by chain_offsets")
        self._init(atoms, torch.from_numpy(begin), torch.from_numpy(length), fields, info or {})

    def _init(
        self,
        atoms: torch.Tensor,
        begin: torch.Tensor,
        length: torch.Tensor,
        fields: dict,
        info: dict,
        residues: torch.Tensor | None = None,
    ) -> None:
        self._atoms, self._begin, self._length = atoms, begin, length
        self._fields, self.info = fields, info
        if residues is None:  # from __init__: the chains tile the atom tensor in order
            sequences = fields["sequences"].tolist()
            try:
                residues = encode_sequence("".join(sequences))
            except ValueError:
                bad = next(i for i, s in enumerate(sequences) if not (s.isascii() and s.isalpha()))
                raise ValueError(
                    f"sequences: chain {bad} has a sequence that is not one-letter residue codes: "
                    f"{sequences[bad]!r:.60}"
                ) from None
        self._residues = residues

    @classmethod
    def load(cls, path: str | Path) -> StructureDataset:
        """Load a dataset file written by :func:`build_structure_dataset`.

        Raises:
            ValueError: naming the file, if it is not an ``.npz`` file, lacks arrays or they are
                inconsistent.
            FileNotFoundError: if there is no such file.
        """
        path = Path(path)
        # np.load reads anything that is not a zip as .npy or pickle, with a confusing message.
        if path.is_file() and not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a structure dataset (not an .npz file)")
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _REQUIRED_ARRAYS if key not in data.files]
            if missing:
                raise ValueError(f"{path}: not a structure dataset, missing arrays {missing}")
            arrays = {key: data[key] for key in data.files}
        info = json.loads(str(arrays["build_info"])) if "build_info" in arrays else {}
        try:
            return cls(
                arrays["atoms"],
                arrays["chain_offsets"],
                arrays["sequences"],
                arrays["sources"],
                arrays["chain_ids"],
                arrays["cluster"],
                arrays.get("starts"),
                info,
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error

    def subset(self, indices) -> StructureDataset:
        """The chains at ``indices`` (in that order), sharing this dataset's atom tensor.

        Raises:
            ValueError: if ``indices`` is empty or out of range.
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size == 0 or index.min() < -len(self) or index.max() >= len(self):
            raise ValueError(f"indices must be a non-empty selection of chains 0..{len(self) - 1}")
        out = StructureDataset.__new__(StructureDataset)
        t = torch.from_numpy(index)
        out._init(
            self._atoms,
            self._begin[t],
            self._length[t],
            {key: value[index] for key, value in self._fields.items()},
            self.info,
            self._residues,
        )
        return out

    def __len__(self) -> int:
        return len(self._begin)

    def __getitem__(self, index: int) -> StructureChain:
        i = range(len(self))[index]  # IndexError with Python's message for a bad index
        begin = int(self._begin[i])
        return StructureChain(
            atoms=self._atoms[begin : begin + int(self._length[i])],
            sequence=str(self._fields["sequences"][i]),
            source=str(self._fields["sources"][i]),
            chain_id=str(self._fields["chain_ids"][i]),
            start=int(self._fields["starts"][i]),
            cluster=int(self._fields["cluster"][i]),
        )

    def __repr__(self) -> str:
        return (
            f"StructureDataset(chains={len(self)}, residues={self.num_residues}, "
            f"clusters={len(np.unique(self._fields['cluster']))})"
        )

    @property
    def lengths(self) -> torch.Tensor:
        """Residues per chain, int64 tensor (chains,)."""
        return self._length.clone()

    @property
    def clusters(self) -> torch.Tensor:
        """Cluster of each chain, int64 tensor (chains,)."""
        return torch.from_numpy(self._fields["cluster"].copy())

    @property
    def sequences(self) -> list[str]:
        """One-letter sequence of each chain."""
        return self._fields["sequences"].tolist()

    @property
    def sources(self) -> list[str]:
        """Source file of each chain."""
        return self._fields["sources"].tolist()

    @property
    def num_residues(self) -> int:
        """Residues in all chains."""
        return int(self._length.sum())

    def split(
        self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, *, trials: int = 64, by: str = "cluster"
    ) -> tuple[StructureDataset, StructureDataset, StructureDataset]:
        """Train / validation / test subsets made of whole sequence clusters (or of chains).

        ``by="cluster"`` (the default) keeps each sequence cluster in one split, so no test chain
        has a close homologue (>= 50 % identity by default) in training. ``by="chain"`` assigns
        every chain (every segment of the dataset) on its own: for a dataset of a single protein
        family, which has too few clusters to split. It leaks sequence similarity between the
        splits (test chains have close homologues, often near-identical ones, in training), so
        held-out numbers measure fitting the family, not generalisation to new folds.

        Sizes are measured in residues (what a model trains on; chains range from tens to
        hundreds of residues). Groups (clusters or chains) are visited in a random order and each
        goes to the split furthest below its target; of ``trials`` such orders, the one whose
        residue fractions deviate least from ``fractions`` (largest absolute deviation) and
        leaves no split empty is kept. With a few dominant families the fractions can only be met
        approximately, and large clusters tend to land in the training split. With few groups
        (say 5 chains of similar length) every order may fill the training split first and leave
        another empty; only then do orders count in which, once as many groups remain as splits
        are empty, each remaining group goes to an empty split (so splits that succeed without
        this rule are unchanged by it).

        Args:
            fractions: three positive fractions summing to 1.
            seed: seed of the random orders; the split is a deterministic function of it.
            trials: random orders tried.
            by: ``"cluster"`` (whole sequence clusters) or ``"chain"`` (chains at random; see above).

        Returns:
            ``(train, val, test)``; with ``by="cluster"`` no cluster appears in two of them.

        Raises:
            ValueError: for bad ``fractions`` / ``trials`` / ``by``, or if there are fewer than 3
                clusters (``by="cluster"``) or chains (``by="chain"``) to give every split one.
        """
        target = np.asarray(fractions, dtype=np.float64)
        if target.shape != (3,) or not np.isfinite(target).all() or (target <= 0).any() or abs(target.sum() - 1) > 1e-6:
            raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions!r}")
        trials = _check_int("trials", trials, 1)
        if by == "cluster":
            ids, inverse = np.unique(self._fields["cluster"], return_inverse=True)
            if len(ids) < 3:
                raise ValueError(
                    f"split needs at least 3 sequence clusters, this dataset has {len(ids)}: add proteins "
                    "of other families, or use by='chain' to split the chains of a single family at "
                    "random (similar sequences then land in train and test)"
                )
        elif by == "chain":
            inverse = np.arange(len(self))
            if len(self) < 3:
                raise ValueError(
                    f"split by='chain' needs at least 3 chains, this dataset has {len(self)}: add structures"
                )
        else:
            raise ValueError(f"by must be 'cluster' or 'chain', got {by!r}")
        inverse = inverse.reshape(-1)
        size = np.bincount(inverse, weights=self._length.numpy()).astype(np.float64)
        groups = len(size)
        goal = target * size.sum()
        rng = np.random.default_rng(seed)
        best, best_error, best_forced = None, np.inf, True
        for _ in range(trials):
            assign = np.empty(groups, dtype=np.int64)
            filled, count, forced = np.zeros(3), np.zeros(3, dtype=np.int64), False
            for k, c in enumerate(rng.permutation(groups)):  # a loop over groups, not residues
                deficit = goal - filled
                empty = count == 0
                if empty.sum() >= groups - k and not empty[np.argmax(deficit)]:
                    # As many groups left as empty splits: the greedy choice would leave one empty.
                    deficit, forced = np.where(empty, deficit, -np.inf), True
                s = int(np.argmax(deficit))
                assign[c] = s
                filled[s] += size[c]
                count[s] += 1
            error = np.abs(filled / size.sum() - target).max()
            # Orders that needed the rule only count when no order managed without it.
            if (best_forced and not forced) or (forced == best_forced and error < best_error):
                best, best_error, best_forced = assign, error, forced
        assert best is not None  # trials >= 1, and the first order is always kept
        chain_split = best[inverse]
        return tuple(self.subset(np.flatnonzero(chain_split == s)) for s in range(3))  # type: ignore[return-value]

    def sample_crops(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        min_length: int = 64,
        max_length: int = 128,
        *,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random contiguous crops of random chains, padded to the longest crop.

        Chains are drawn uniformly (with replacement); each crop length is uniform in
        ``[min_length, max_length]`` and capped at the chain's length, so a chain shorter than
        ``min_length`` is used whole; the start is uniform over the positions that fit.

        Args:
            batch_size: crops to draw.
            generator: torch random generator (None: the global one).
            min_length: shortest crop requested.
            max_length: longest crop.
            buckets: padded lengths for static shapes (e.g. ``(64, 96, 128)``, the largest at
                least ``max_length``): each batch draws one bucket, with probability
                proportional to the crop lengths it holds, then crop lengths uniform in
                ``(previous bucket, bucket]`` within ``[min_length, max_length]``, padded to the
                bucket's length. The crop lengths stay uniform on ``[min_length, max_length]``
                overall, every batch has one of ``len(buckets)`` shapes (so compiled graphs and
                CUDA graphs are reused) and padding stays below one bucket's width. ``None``:
                lengths drawn per crop, padded to the longest.

        Returns:
            ``atoms`` float32 (B, Lmax, 4, 3) N, CA, C, O in Angstrom (zeros at padding; O may
            be NaN where the file had none) and ``mask`` bool (B, Lmax), True at residues;
            ``Lmax`` is the bucket's length with ``buckets``.

        Raises:
            ValueError: for ``batch_size`` < 1, ``min_length`` < 1 or ``max_length`` < ``min_length``,
                and ``buckets`` that are not increasing positive integers reaching ``max_length``.
        """
        index, mask = self._crop_index(batch_size, generator, min_length, max_length, buckets)
        return self._atoms[index].masked_fill(~mask[:, :, None, None], 0.0), mask

    def sample_sequence_crops(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        min_length: int = 64,
        max_length: int = 128,
        *,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample_crops` with the crops' residue types (the same crops for the same
        generator state).

        Returns:
            ``atoms`` (B, Lmax, 4, 3), ``residues`` int64 (B, Lmax) indices into
            :data:`AMINO_ACIDS` (:data:`UNKNOWN_RESIDUE` for non-standard letters and at
            padding) and ``mask`` bool (B, Lmax).
        """
        index, mask = self._crop_index(batch_size, generator, min_length, max_length, buckets)
        atoms = self._atoms[index].masked_fill(~mask[:, :, None, None], 0.0)
        return atoms, self._residues[index].masked_fill(~mask, UNKNOWN_RESIDUE), mask

    def residue_types(self, index: int) -> torch.Tensor:
        """Residue types ``(L,)`` of chain ``index`` (indices into :data:`AMINO_ACIDS`)."""
        i = range(len(self))[index]
        begin = int(self._begin[i])
        return self._residues[begin : begin + int(self._length[i])]

    def _crop_index(
        self,
        batch_size: int,
        generator: torch.Generator | None,
        min_length: int,
        max_length: int,
        buckets: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the atom tensor ``(B, Lmax)`` of random crops, and their mask."""
        batch_size = _check_int("batch_size", batch_size, 1)
        min_length = _check_int("min_length", min_length, 1)
        max_length = _check_int("max_length", max_length, min_length)
        edges = None if buckets is None else bucket_edges(buckets, min_length, max_length)
        chain = torch.randint(len(self), (batch_size,), generator=generator)
        length = self._length[chain]
        if edges is None:
            want = torch.randint(min_length, max_length + 1, (batch_size,), generator=generator)
        else:
            # one bucket per batch, chosen with weight = the crop lengths it holds, so that the
            # lengths are uniform on [min_length, max_length] over the batches
            low, high, width = edges
            pick = int(torch.multinomial((high - low + 1).double(), 1, generator=generator))
            want = torch.randint(int(low[pick]), int(high[pick]) + 1, (batch_size,), generator=generator)
        crop = torch.minimum(want, length)
        start = self._random_starts(length - crop + 1, generator)
        positions = torch.arange(int(crop.max()) if edges is None else int(edges[2][pick]))
        mask = positions < crop[:, None]
        # Padding positions read the crop's first residue (zeroed by the callers): one gather, no loop.
        return self._begin[chain, None] + start[:, None] + torch.where(mask, positions, 0), mask

    def crops_of_length(self, length: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` crops of exactly ``length`` residues from chains at least that long.

        Chains are drawn without replacement while possible (a random permutation of the
        eligible chains, repeated when ``count`` exceeds their number); each start is uniform.

        Args:
            length: crop length in residues.
            count: crops to draw.
            generator: torch random generator (None: the global one).

        Returns:
            float32 (count, length, 4, 3) N, CA, C, O in Angstrom (O may be NaN where absent).

        Raises:
            ValueError: for ``length`` or ``count`` < 1, or if no chain has ``length`` residues.
        """
        return self._atoms[self._length_index(length, count, generator)]

    def _length_index(self, length: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """Rows ``(count, length)`` of the crops of :meth:`crops_of_length`."""
        length = _check_int("length", length, 1)
        count = _check_int("count", count, 1)
        eligible = torch.nonzero(self._length >= length).flatten()
        if len(eligible) == 0:
            raise ValueError(f"length={length}: no chain is that long (longest: {int(self._length.max())} residues)")
        rounds = -(-count // len(eligible))
        chain = torch.cat([eligible[torch.randperm(len(eligible), generator=generator)] for _ in range(rounds)])[:count]
        start = self._random_starts(self._length[chain] - length + 1, generator)
        return self._begin[chain, None] + start[:, None] + torch.arange(length)

    def length_batch(
        self,
        squared_residues: int,
        generator: torch.Generator | None = None,
        min_length: int = 64,
        max_length: int = 128,
        *,
        max_batch: int = 80,
        lengths: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of crops of one length, as many as a budget of squared residues holds
        (FrameFlow's batching: proteins of one length per batch, about 400k squared residues, at
        most 80): no padding, and the batch's cost, which grows as ``B L^2`` in the pair features,
        is about the same at every length.

        The length ``L`` is uniform on ``[min_length, max_length]`` capped at the longest chain
        (or on those of the given ``lengths`` in that range that a chain reaches: few shapes, for
        compiled steps); the batch
        holds ``clamp(squared_residues // L^2, 1, max_batch)`` crops of :meth:`crops_of_length`.

        Returns:
            ``atoms`` float32 (B, L, 4, 3), ``residues`` int64 (B, L) (as
            :meth:`sample_sequence_crops`) and ``mask`` bool (B, L), all True.

        Raises:
            ValueError: for a budget, batch or length below 1, or ``lengths`` no chain reaches.
        """
        squared_residues = _check_int("squared_residues", squared_residues, 1)
        max_batch = _check_int("max_batch", max_batch, 1)
        longest = int(self._length.max())
        min_length = _check_int("min_length", min_length, 1)
        max_length = _check_int("max_length", max_length, min_length)
        if lengths is not None:
            choices = [_check_int("lengths", int(length), 1) for length in lengths]
            usable = [length for length in choices if min_length <= length <= max_length]
            if not usable:
                raise ValueError(f"lengths={choices}: none is in the crop range [{min_length}, {max_length}]")
            reachable = [length for length in usable if length <= longest]
            if not reachable:
                raise ValueError(f"lengths={usable}: no chain is that long (longest: {longest} residues)")
            length = reachable[int(torch.randint(len(reachable), (), generator=generator))]
        else:
            high = min(max_length, longest)
            length = int(torch.randint(min(min_length, high), high + 1, (), generator=generator))
        count = max(1, min(max_batch, squared_residues // length**2))
        index = self._length_index(length, count, generator)
        return self._atoms[index], self._residues[index], torch.ones(count, length, dtype=torch.bool)

    @staticmethod
    def _random_starts(choices: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Uniform integers in ``[0, choices)`` per element (float64 keeps the rounding exact)."""
        u = torch.rand(choices.shape, generator=generator, dtype=torch.float64)
        return torch.minimum((u * choices).long(), choices - 1)
