"""Riemannian flow matching: geodesic conditional paths, the Riemannian FM loss,
projected ODE sampling and exact likelihoods on the manifolds of :mod:`manifolds`."""
from rfm.loss import rfm_loss
from rfm.objective import RFMObjective
from rfm.path import GeodesicPath
from rfm.solver import ManifoldFlowProcess, ODESolver, riemannian_divergence

__all__ = ["GeodesicPath", "rfm_loss", "RFMObjective", "ODESolver", "ManifoldFlowProcess", "riemannian_divergence"]
