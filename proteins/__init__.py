"""Protein backbones as SE(3)^N frames: structure data, frames and atoms, the invariant network,
the backbone flow, sampling to PDB files and structure metrics."""
