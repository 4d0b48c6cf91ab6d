"""Discrete flow matching: mixture paths (mask and uniform sources), losses, CTMC Euler
sampling for tokens, and masked transformer models for text."""
from dfm.guidance import GuidedPosterior
from dfm.loss import ELBOEstimate, mask_elbo, masked_cross_entropy, mixture_generalized_kl
from dfm.path import MixturePath
from dfm.solver import CTMCSolver, MixtureJumpProcess

__all__ = ["GuidedPosterior", "MixturePath", "masked_cross_entropy", "mixture_generalized_kl", "ELBOEstimate", "mask_elbo",
           "CTMCSolver", "MixtureJumpProcess"]
