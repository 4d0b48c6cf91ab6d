"""Riemannian flow matching: geodesic conditional paths, the Riemannian FM loss,
projected ODE sampling and exact likelihoods on the manifolds of :mod:`manifolds`, and densities
on the sphere fitted to latitude/longitude data (:mod:`rfm.sphere_density`, ``rdfm earth``)."""

from rfm.affine import PREDICTION_TYPES, AffinePath, ScheduleChange, prediction_loss
from rfm.coupling import IndependentCoupling, OTCoupling, PairedCoupling
from rfm.dataset_objective import dataset_rfm_loss
from rfm.gaussian import GaussianMixture, marginal_fields
from rfm.loss import rfm_loss
from rfm.models import GuidedVelocity
from rfm.objective import RFMObjective
from rfm.path import GeodesicPath
from rfm.sde import AffineSDEProcess, SDESolver
from rfm.solver import ManifoldFlowProcess, ODESolver, riemannian_divergence
from rfm.sphere_density import SphereDensityConfig, SphereDensityFit, fit_sphere_density

__all__ = [
    "AffinePath",
    "PREDICTION_TYPES",
    "prediction_loss",
    "ScheduleChange",
    "GaussianMixture",
    "marginal_fields",
    "SDESolver",
    "AffineSDEProcess",
    "IndependentCoupling",
    "PairedCoupling",
    "OTCoupling",
    "GuidedVelocity",
    "GeodesicPath",
    "rfm_loss",
    "RFMObjective",
    "dataset_rfm_loss",
    "ODESolver",
    "ManifoldFlowProcess",
    "riemannian_divergence",
    "SphereDensityConfig",
    "SphereDensityFit",
    "fit_sphere_density",
]
