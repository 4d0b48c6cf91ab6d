"""Protein backbones as SE(3)^N frames: structure data, frames and atoms, the invariant network,
the backbone flow, sampling to PDB files and structure metrics.

- :mod:`proteins.data`: structure files to cached datasets with sequence-cluster splits and crops.
- :mod:`proteins.frames`: residue frames from N, CA, C and ideal backbone atoms back.
- :mod:`proteins.network`: the SE(3)-equivariant IPA network predicting clean frames.
- :mod:`proteins.flow`: flow matching on SE(3)^N (base, path, loss, sampler, likelihood).
- :mod:`proteins.codesign`: structure and sequence together (co-design, inverse folding, folding).
- :mod:`proteins.manifold`: one backbone as one manifold (for likelihoods).
- :mod:`proteins.pdb`: PDB output; :mod:`proteins.metrics` / :mod:`proteins.evaluation`: structure metrics.

Structure files need the ``proteins`` extra (gemmi, biotite, pydssp), imported on first use.
"""

from proteins.codesign import CodesignFlow, CodesignSample
from proteins.data import (
    AMINO_ACIDS,
    StructureDataset,
    build_from_folders,
    build_structure_dataset,
    decode_residues,
    encode_sequence,
    read_backbone_chains,
)
from proteins.flow import NM_PER_ANGSTROM, BackboneFlow
from proteins.frames import backbone_atoms, backbone_dihedrals, frames_from_backbone, ideal_chain
from proteins.manifold import CentredFrames
from proteins.network import BackboneNetwork, CodesignNetwork, CodesignPrediction
from proteins.pdb import write_pdb

__all__ = [
    "StructureDataset",
    "build_from_folders",
    "build_structure_dataset",
    "read_backbone_chains",
    "NM_PER_ANGSTROM",
    "BackboneFlow",
    "backbone_atoms",
    "backbone_dihedrals",
    "frames_from_backbone",
    "ideal_chain",
    "CentredFrames",
    "BackboneNetwork",
    "write_pdb",
    "AMINO_ACIDS",
    "encode_sequence",
    "decode_residues",
    "CodesignFlow",
    "CodesignSample",
    "CodesignNetwork",
    "CodesignPrediction",
]
