"""Discrete flow matching: mixture paths (mask and uniform sources), losses and ELBOs with
variance-reduced masking, CTMC sampling for tokens (prompts, infilling, filtering, unmasking
orders, semi-autoregressive blocks), block diffusion, and transformer models for text."""

from dfm.block import BlockDiffusion, BlockDiffusionTransformer, block_attention_mask
from dfm.guidance import GuidedPosterior
from dfm.loss import (
    ELBOEstimate,
    MaskedDiffusionLoss,
    elbo_estimate,
    mask_elbo,
    masked_cross_entropy,
    mixture_generalized_kl,
)
from dfm.masking import MaskedBatch, coupled_uniforms, mask_batch
from dfm.path import MixturePath
from dfm.prompting import HOLE, infill_template, prompt_template
from dfm.solver import CTMCSolver, MixtureJumpProcess, filter_logits

__all__ = [
    "GuidedPosterior",
    "MixturePath",
    "masked_cross_entropy",
    "mixture_generalized_kl",
    "ELBOEstimate",
    "mask_elbo",
    "elbo_estimate",
    "MaskedDiffusionLoss",
    "MaskedBatch",
    "mask_batch",
    "coupled_uniforms",
    "CTMCSolver",
    "MixtureJumpProcess",
    "filter_logits",
    "BlockDiffusion",
    "BlockDiffusionTransformer",
    "block_attention_mask",
    "HOLE",
    "prompt_template",
    "infill_template",
]
