"""Geometry of the state spaces of rdfm: exact exp/log/distance, projections, base
distributions. No training or model code lives here.

All classes are ``geoopt.Manifold`` subclasses (``geoopt.ManifoldParameter`` and
``geoopt.optim.RiemannianAdam`` work on them) and accept any number of leading batch dims.
"""

from manifolds.base import RiemannianManifold
from manifolds.euclidean import Euclidean
from manifolds.product import Product
from manifolds.se3 import SE3
from manifolds.so3 import SO3, hat, quaternion_to_matrix, rotation_angle, so3_exp, so3_log, vee
from manifolds.sphere import Sphere
from manifolds.torus import FlatTorus

__all__ = [
    "RiemannianManifold",
    "Euclidean",
    "Sphere",
    "FlatTorus",
    "SO3",
    "SE3",
    "Product",
    "hat",
    "vee",
    "so3_exp",
    "so3_log",
    "rotation_angle",
    "quaternion_to_matrix",
]
