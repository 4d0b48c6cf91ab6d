"""Sequence identity (optimal BLOSUM62 alignment, biotite) and single-linkage clustering of
chains by identity, for dataset splits without close homologues across them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["IDENTITY_DEFINITION", "sequence_identity", "cluster_sequences"]

#: How :func:`sequence_identity` and :func:`cluster_sequences` measure identity (stored in the
#: dataset's build metadata).
IDENTITY_DEFINITION = (
    "identical aligned positions (X excluded) / length of the shorter sequence, in an optimal "
    "alignment with BLOSUM62, affine gaps (open -11, extend -1) and free terminal gaps (biotite align_optimal)"
)

# --------------------------------------------------------------------------------------------
# Sequence identity and clustering
# --------------------------------------------------------------------------------------------

_GAP_PENALTY = (-11, -1)  # BLAST's defaults for BLOSUM62


def _check_identity(identity: float) -> None:
    if isinstance(identity, bool) or not (
        isinstance(identity, (int, float, np.integer, np.floating)) and 0 < identity <= 1
    ):
        raise ValueError(f"identity must be a fraction in (0, 1], got {identity!r}")


def _protein_sequence(sequence: str):
    from biotite.sequence import ProteinSequence

    # biotite's protein alphabet has no U (selenocysteine) or O (pyrrolysine): align them as X.
    return ProteinSequence(re.sub(r"[^ACDEFGHIKLMNPQRSTVWYBZX]", "X", sequence.upper()))


def _aligned_identity(a, b, matrix) -> float:
    from biotite.sequence.align import align_optimal, get_codes

    alignment = align_optimal(a, b, matrix, gap_penalty=_GAP_PENALTY, terminal_penalty=False, max_number=1)[0]
    codes = get_codes(alignment)  # -1 at gaps
    unknown = a.alphabet.encode("X")
    same = int(((codes[0] == codes[1]) & (codes[0] >= 0) & (codes[0] != unknown)).sum())
    return same / min(len(a), len(b))


def sequence_identity(a: str, b: str) -> float:
    """Sequence identity of two protein sequences, as in :func:`cluster_sequences`.

    The sequences are aligned optimally (biotite's ``align_optimal``: BLOSUM62, affine gap
    penalty -11 to open and -1 to extend, terminal gaps free, so a fragment can align anywhere
    in a longer chain); identity is the number of aligned positions with the same residue
    (``X`` never counts as identical) divided by the length of the shorter sequence.

    Args:
        a: first one-letter sequence.
        b: second one-letter sequence.

    Returns:
        The identity in [0, 1].

    Raises:
        ValueError: if a sequence is empty.
    """
    if not a or not b:
        raise ValueError("sequence_identity: sequences must be non-empty")
    from biotite.sequence.align import SubstitutionMatrix

    return _aligned_identity(_protein_sequence(a), _protein_sequence(b), SubstitutionMatrix.std_protein_matrix())


# k-mer prefilter of cluster_sequences: a pair is aligned only if some band of _BAND neighbouring
# diagonals holds at least max(_MIN_HITS, _HIT_RATE * shorter length) exact 3-mer matches. At
# 50 % identity spread at random, a fraction 0.5**3 = 0.125 of positions starts an identical
# 3-mer; real homologues at >= 50 % had >= 0.07 per residue of the shorter sequence in their best
# band. Checked against aligning all 293k pairs of the 766 distinct chains of the benchmark
# dataset: no pair at >= 50 % identity (nor at >= 40 % but 13) fails the filter, and the clusters
# are identical to the all-pairs ones.
_KMER, _BAND, _MIN_HITS, _HIT_RATE = 3, 8, 3, 0.03


def _candidate_pairs(sequences: list, identity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``i < j`` passing the k-mer prefilter, with their best band's k-mer match count."""
    from biotite.sequence.align import KmerTable

    n = len(sequences)
    lengths = np.array([len(seq) for seq in sequences])
    unknown = sequences[0].alphabet.encode("X")
    masks = [seq.code == unknown for seq in sequences]  # k-mers with X would match by accident
    indexed = np.flatnonzero(lengths >= _KMER)  # shorter ones have no k-mer: aligned with all
    firsts, seconds, hits = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for i in np.flatnonzero(lengths < _KMER).tolist():
        partners = np.flatnonzero((np.arange(n) > i) | (lengths >= _KMER))
        partners = partners[partners != i]
        firsts.append(np.minimum(partners, i))
        seconds.append(np.maximum(partners, i))
        hits.append(np.zeros(len(partners), dtype=np.int64))
    if len(indexed) == 0:
        return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(hits)
    table = KmerTable.from_sequences(
        _KMER, [sequences[i] for i in indexed], ref_ids=indexed, ignore_masks=[masks[i] for i in indexed]
    )
    pad = lengths.max() + 1
    # Below 50 % identity, identical 3-mers get rarer as identity**3: lower the rate with it.
    rate = _HIT_RATE * min(1.0, (identity / 0.5) ** 3)
    stride = 2 * pad // _BAND + 2  # band indices per pair, so keys of different pairs never collide
    for i in indexed.tolist():  # one vectorised k-mer lookup per sequence
        found = table.match(sequences[i], ignore_mask=masks[i]).astype(np.int64)
        found = found[found[:, 1] > i]
        diagonal = found[:, 2] - found[:, 0] + pad
        best = np.zeros(n, dtype=np.int64)
        # Two band grids offset by half a band: a run of hits on nearby diagonals (a short indel
        # apart) lies inside one band of one of the grids.
        for offset in (0, _BAND // 2):
            keys, counts = np.unique(found[:, 1] * stride + (diagonal + offset) // _BAND, return_counts=True)
            np.maximum.at(best, keys // stride, counts)
        needed = np.maximum(_MIN_HITS, np.ceil(rate * np.minimum(lengths, lengths[i])))
        partners = np.flatnonzero(best >= needed)
        firsts.append(np.full(len(partners), i))
        seconds.append(partners)
        hits.append(best[partners])
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(hits)


def cluster_sequences(
    sequences: Sequence[str], identity: float = 0.5, *, links: Iterable[tuple[int, int]] = ()
) -> np.ndarray:
    """Single-linkage clusters of protein sequences at a sequence-identity threshold.

    Two sequences are linked when their :func:`sequence_identity` (identical aligned positions
    / length of the shorter sequence; BLOSUM62, affine gaps, free end gaps) is >= ``identity``;
    clusters are the connected components, so a cluster may hold pairs below the threshold
    joined through intermediates. Not all pairs are aligned: a k-mer prefilter (exact 3-mer
    matches on nearby diagonals, biotite ``KmerTable``) drops pairs without a shared ungapped
    stretch, and pairs already in one component are skipped (which does not change components).
    The prefilter was checked against all-pairs alignment at ``identity`` = 0.5 (see
    ``_HIT_RATE``); below about 0.4 it misses more and more true pairs (it needs at least 3
    identical 3-mers on nearby diagonals).

    Args:
        sequences: one-letter sequences (``U``, ``O`` and other letters outside biotite's
            protein alphabet are aligned as ``X``).
        identity: threshold in (0, 1].
        links: extra pairs of indices to put in one cluster regardless of their sequences.

    Returns:
        int64 array (n,): cluster of each sequence, numbered 0, 1, ... in order of first member.

    Raises:
        ValueError: for ``identity`` outside (0, 1], an empty sequence, or a link out of range.
    """
    _check_identity(identity)
    n = len(sequences)
    if any(not seq for seq in sequences):
        raise ValueError("sequences: every sequence must be non-empty")
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b in links:
        if not (0 <= a < n and 0 <= b < n):
            raise ValueError(f"links: pair ({a}, {b}) is out of range for {n} sequences")
        parent[root(a)] = root(b)
    if n > 1:
        from biotite.sequence.align import SubstitutionMatrix

        encoded = [_protein_sequence(seq) for seq in sequences]
        matrix = SubstitutionMatrix.std_protein_matrix()  # BLOSUM62
        first, second, hits = _candidate_pairs(encoded, identity)
        lengths = np.array([len(seq) for seq in sequences])
        # Most promising pairs first, so families merge early and their other pairs are skipped.
        order = np.argsort(-hits / np.minimum(lengths[first], lengths[second]), kind="stable")
        for i, j in zip(first[order].tolist(), second[order].tolist()):
            ri, rj = root(i), root(j)
            if ri != rj and _aligned_identity(encoded[i], encoded[j], matrix) >= identity:
                parent[ri] = rj
    roots = np.array([root(x) for x in range(n)], dtype=np.int64)
    _, first_index, labels = np.unique(roots, return_index=True, return_inverse=True)
    # np.unique numbers clusters by root; renumber them by their first member.
    rank = np.empty(len(first_index), dtype=np.int64)
    rank[np.argsort(first_index, kind="stable")] = np.arange(len(first_index))
    return rank[labels.reshape(-1)]
