"""Discrete flow matching: mixture paths (mask and uniform sources), losses and ELBOs with
variance-reduced masking, CTMC sampling for tokens (prompts, infilling, filtering, unmasking
orders, semi-autoregressive blocks), block diffusion, and transformer models for text.

Text end to end: corpora and tokenisation (:mod:`dfm.corpus`), the autoregressive baseline
with its exact likelihood and sample-quality measures (:mod:`dfm.autoregressive`), text models
and their training on a corpus (:mod:`dfm.text_model`), and sampling from a trained run
(:mod:`dfm.text_generation`); ``rdfm text train`` / ``rdfm text sample`` (:mod:`dfm.commands`)
run them from the command line."""

from dfm.autoregressive import (
    ar_bpc,
    ar_logits,
    ar_nll,
    ar_sample,
    generative_perplexity,
    sample_entropy_bits,
    unigram_bpc,
)
from dfm.block import BlockDiffusion, BlockDiffusionTransformer, block_attention_mask
from dfm.corpus import (
    Corpus,
    TokenStreams,
    Vocabulary,
    eval_chunks,
    load_text_corpus,
    random_crops,
    split_lines,
    tokenize_corpus,
    train_bpe,
)
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
from dfm.text_generation import TextModel, TextSamples, load_text_run, sample_text
from dfm.text_model import TextConfig, TextRunError, build_model, model_kind, train_text, train_text_model

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
    "ar_logits",
    "ar_nll",
    "ar_bpc",
    "ar_sample",
    "generative_perplexity",
    "sample_entropy_bits",
    "unigram_bpc",
    "Corpus",
    "TokenStreams",
    "Vocabulary",
    "split_lines",
    "load_text_corpus",
    "random_crops",
    "eval_chunks",
    "train_bpe",
    "tokenize_corpus",
    "TextConfig",
    "TextRunError",
    "model_kind",
    "build_model",
    "train_text_model",
    "train_text",
    "TextModel",
    "TextSamples",
    "load_text_run",
    "sample_text",
]
