"""Riemannian flow matching: geodesic conditional paths, the Riemannian FM loss,
projected ODE sampling and exact likelihoods on the manifolds of :mod:`manifolds`."""
