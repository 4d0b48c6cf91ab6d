r"""Structure metrics of the backbone benchmark: secondary structure, local geometry, clashes,
compactness, Ramachandran and CA-distance statistics, TM-score, diversity and novelty.

Generated backbones are compared with held-out real crops of the same lengths; every metric
here is applied identically to both sets, so systematic choices (the DSSP reimplementation,
the absence of sequence information, the TM-score heuristics) cancel in the comparison.

Conventions:

- Backbone atoms are tensors ``(B, L, A, 3)`` in Angstrom, atoms in the order N, CA, C, O
  (``A = 4``; some metrics need only CA and accept any ``A >= 2``), float32 or float64, on
  any device (results are computed on the CPU where a library needs it).
- ``mask`` is an optional bool ``(B, L)``: False marks padding, whose coordinates are ignored
  (they may be anything, NaN included). ``None`` means every residue is real. Coordinates of
  real residues must be finite. Sequence separation ``|i - j|`` is counted in positions of
  the padded array, so a mask with holes is treated as a chain with missing residues.
- Angles are radians in (-pi, pi] as in :mod:`proteins.frames`.
- Pooled fractions (``per_structure=False``) divide the total count over the batch by the
  total number of eligible items, so longer structures weigh more; the per-structure values
  are available for means over structures or error bars.

Secondary structure is the three-state reduction of DSSP (Kabsch & Sander 1983) computed by
``pydssp`` (Minami 2023, a vectorised reimplementation with the DSSP H-bond energy):
helix = DSSP H, G, I (alpha, 3-10 and pi helices), strand = E and B (ladders and isolated
bridges; a residue in both counts as helix), coil = everything else. The H-bond criterion
is DSSP's electrostatic energy below -0.5 kcal/mol. Amide hydrogens are placed from the backbone (pydssp's
bisector rule) and proline is not excluded as an H-bond donor, because generated backbones
have no sequence.

TM-score (Zhang & Skolnick 2004) of a model against a reference of :math:`L_r` residues, for
aligned residue pairs :math:`(i, j)` after the superposition that maximises it:

.. math:: \mathrm{TM} = \max_{R, t} \frac{1}{L_r} \sum_{(i, j)} \frac{1}{1 + (d_{ij} / d_0)^2},
   \qquad d_0 = \max\!\big(1.24\,(L_r - 15)^{1/3} - 1.8,\; 0.5\big)\ \text{A},

always normalised by the length of the *reference* (the first argument of :func:`tm_score`).
With a given residue correspondence (``aligned=True``) the maximum over rigid motions is
searched as in the TM-score program: least-squares superpositions of contiguous seed fragments
(lengths L, L/2, L/4, ..., >= 4) are refined by re-superimposing on the pairs closer than
:math:`d_{search} = \mathrm{clip}(d_0, 4.5, 8)` A. Without one (``aligned=False``: samples,
crops against chains) the alignment is searched too, by **TM-align** (Zhang & Skolnick 2005)
through ``tmtools`` (in the ``proteins`` extra), the program published diversity and novelty
numbers use; one alignment gives both normalisations. Tested against it: TM-align's own
alignments rescored by the superposition search above give its scores (within 0.003 on 28
pairs of real domains).

Without ``tmtools`` a heuristic stands in (with a warning), the best of:

1. :func:`biotite.structure.superimpose_structural_homologs` (3Di structural-alphabet
   alignment refined by TM-score dynamic programming; its refinement loop capped at 20
   rounds because it can oscillate forever), scored both with biotite's own superposition and
   with the search above (seed fragments >= 8);
2. the 3 gapless threadings (one chain slid along the other) with the highest lower bounds
   (:func:`_threading_bounds`, computed for all shifts at once by FFT), refined by the search.

Each candidate is the TM-score of an explicit alignment and superposition, so the heuristic is a
lower bound of the optimum. It equals TM-align on similar pairs (TM > 0.5) but is lower on
dissimilar ones: by 0.07 on average and up to 0.22 on those 28 pairs (all-against-all of 8 real
domains), so diversity and novelty scores computed without tmtools read too low.
"""

from __future__ import annotations

# The metrics live by concept; this module gathers them (and documents them above).
from proteins.geometry_metrics import (
    ca_bond_fraction,
    ca_bond_lengths,
    ca_distance_wasserstein,
    ca_distances_at_separation,
    clash_counts,
    clash_rate,
    js_divergence,
    phi_psi,
    radius_of_gyration,
    ramachandran_histogram,
    ramachandran_js,
)
from proteins.secondary_structure import (
    SS_COIL,
    SS_HELIX,
    SS_NAMES,
    SS_PAD,
    SS_STRAND,
    secondary_structure,
    ss_fractions,
)
from proteins.structure_sets import diversity, max_tm_to, novelty, pairwise_tm
from proteins.tm_score import backbone_atom_array, ca_rmsd, tm_d0, tm_score

__all__ = [
    "SS_PAD",
    "SS_COIL",
    "SS_HELIX",
    "SS_STRAND",
    "SS_NAMES",
    "secondary_structure",
    "ss_fractions",
    "ca_bond_lengths",
    "ca_bond_fraction",
    "clash_counts",
    "clash_rate",
    "radius_of_gyration",
    "phi_psi",
    "ramachandran_histogram",
    "ramachandran_js",
    "js_divergence",
    "ca_distances_at_separation",
    "ca_distance_wasserstein",
    "tm_d0",
    "backbone_atom_array",
    "tm_score",
    "ca_rmsd",
    "pairwise_tm",
    "max_tm_to",
    "diversity",
    "novelty",
]
