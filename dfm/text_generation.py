"""Text from a trained text model (:mod:`dfm.text_model`): continue a prompt, or fill the holes
of a template in place, with any of the three kinds of model.

The AR model continues a prompt token by token (:func:`dfm.autoregressive.ar_sample`); the
masked model runs the CTMC over the whole window with the given tokens fixed
(:class:`dfm.CTMCSolver`, optionally in semi-autoregressive blocks); the block-diffusion model
generates block after block (:class:`dfm.BlockDiffusion`), the window padded to a whole number
of blocks with positions to generate and cut back (a later block never changes an earlier
one). Only masked and block models fill templates: a hole may have context on both sides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dfm.autoregressive import ar_sample
from dfm.block import BlockDiffusion
from dfm.corpus import Vocabulary
from dfm.path import MixturePath
from dfm.prompting import HOLE, infill_template, prompt_template
from dfm.solver import CTMCSolver
from dfm.text_model import CHECKPOINT_NAME, TextConfig, build, check_model, config_from_settings
from dfm.transformer import TokenTransformer

__all__ = ["TextModel", "TextSamples", "load_text_run", "sample_text"]


@dataclass
class TextModel:
    """A trained text model ready to sample: its network (in eval mode), model name (``"ar"``,
    ``"masked"``, ``"blockB"``), settings, vocabulary and training steps."""

    network: nn.Module
    name: str
    config: TextConfig
    vocabulary: Vocabulary
    steps: int

    @classmethod
    def from_state(
        cls, name: str, config: TextConfig, vocabulary: Vocabulary, state: dict[str, Tensor], steps: int
    ) -> TextModel:
        """The model ``name`` built from ``config`` over ``vocabulary`` with the weights ``state``."""
        kind, block = check_model(name, config)
        network = build(config, vocabulary.size, causal=kind == "ar", block_size=block)
        network.load_state_dict(state)
        return cls(network.eval(), name, config, vocabulary, steps)


def load_text_run(run: str | os.PathLike[str]) -> TextModel:
    """The model of a run folder of :func:`dfm.text_model.train_text` (its selected EMA weights).

    Raises:
        FileNotFoundError: if ``run`` holds no checkpoint (or a BPE run lacks its tokenizer).
        ValueError: if the checkpoint is not one of a text model.
    """
    from gm.train import load_trained_weights

    run = Path(run)
    path = run / CHECKPOINT_NAME
    if not path.is_file():
        where = "no such folder" if not run.is_dir() else f"no {CHECKPOINT_NAME} in it"
        raise FileNotFoundError(f"no trained text model in {run} ({where}): train one with `rdfm text train`")
    weights = load_trained_weights(path)
    settings = weights.run_config
    if "model" not in settings or not ("chars" in settings or "tokenizer_file" in settings):
        raise ValueError(f"{path} is not the checkpoint of a text model (made by another command?)")
    if "chars" in settings:
        vocabulary = Vocabulary(chars=settings["chars"])
    else:
        tokenizer = run / settings["tokenizer_file"]
        if not tokenizer.is_file():
            raise FileNotFoundError(f"the tokenizer of {path} is missing: {tokenizer}")
        vocabulary = Vocabulary(bpe_json=tokenizer.read_text(encoding="utf-8"))
    config = config_from_settings(settings)
    return TextModel.from_state(settings["model"], config, vocabulary, weights.state, weights.steps)


@dataclass
class TextSamples:
    """Samples of :func:`sample_text`.

    Attributes:
        tokens: ``(n, L)`` token ids.
        fixed: ``(n, L)``, True at the given positions (the prompt, the template's text).
        vocabulary: to turn the ids into text.
        settings: the sampler's options that were set (for a report).
    """

    tokens: Tensor
    fixed: Tensor
    vocabulary: Vocabulary
    settings: dict[str, Any] = field(default_factory=dict)

    def texts(self) -> list[str]:
        """The text of each sample."""
        return [self.vocabulary.decode(row) for row in self.tokens]

    def marked(self) -> list[str]:
        """The text of each sample with every generated token in brackets (``in the [b][e]ginning``)."""
        return [
            "".join(p if given else f"[{p}]" for p, given in zip(self.vocabulary.pieces(row), keep.tolist()))
            for row, keep in zip(self.tokens, self.fixed)
        ]


def _template_ids(vocabulary: Vocabulary, template: str, hole: str) -> Tensor:
    """Template ids: each ``hole`` character one :data:`dfm.prompting.HOLE`, the text between
    holes encoded piece by piece."""
    ids: list[int] = []
    for i, part in enumerate(template.split(hole)):
        if i:
            ids.append(HOLE)
        if part:
            ids.extend(vocabulary.encode(part).tolist())
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def sample_text(
    model: TextModel,
    *,
    prompt: str | None = None,
    template: str | None = None,
    hole: str = "_",
    n: int = 3,
    length: int | None = None,
    steps: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    unmasking: str = "random",
    block_size: int | None = None,
    seed: int = 0,
) -> TextSamples:
    """``n`` samples of ``model`` that continue ``prompt`` or fill ``template``'s holes.

    Args:
        prompt: text to continue, to ``length`` tokens in all (default: the context length).
        template: text whose ``hole`` characters (one token each) are filled in place
            (masked and block models).
        steps: CTMC steps (masked: default one per position; block models: per block,
            default the block size).
        temperature, top_k, top_p: the tempered, filtered token distribution.
        unmasking: ``"random"``, ``"random_order"`` or ``"confidence"`` (masked and block).
        block_size: masked model: generate in semi-autoregressive blocks of this size.
        seed: of the draws (on the model's device).

    Raises:
        ValueError: naming the problem: neither or both of prompt and template, characters the
            model does not know, a prompt or template too long for the context, a template
            without holes or for the AR model, a bad sampler option.
    """
    if (prompt is None) == (template is None):
        raise ValueError("give exactly one of prompt and template")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of samples, got {n!r}")
    if len(hole) != 1:
        raise ValueError(f"hole must be one character, got {hole!r}")
    cfg, vocabulary, network = model.config, model.vocabulary, model.network
    kind, block = check_model(model.name, cfg)
    text = prompt if prompt is not None else template
    assert text is not None
    what = "prompt" if prompt is not None else "template"
    unknown = vocabulary.unknown(text if prompt is not None else text.replace(hole, ""))
    if unknown:
        raise ValueError(f"{what} has characters the model does not know: {unknown!r}")
    length = cfg.length if length is None else length
    if length < 1:
        raise ValueError(f"length must be a positive number of tokens, got {length}")
    device = next(network.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    options: dict[str, Any] = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    path = MixturePath(vocabulary.size, "mask")

    def padded(size: int) -> int:  # a block model generates whole blocks
        return size if block is None else -(-size // block) * block

    if prompt is not None:
        if padded(length) > cfg.length:
            raise ValueError(f"length must be at most the context length {cfg.length}, got {length}")
        ids = vocabulary.encode(prompt)
        if kind == "ar":
            assert isinstance(network, TokenTransformer)  # build's AR network
            tokens = ar_sample(network, n, length, generator, prompt=ids, **options).cpu()
            fixed = torch.zeros_like(tokens, dtype=torch.bool)
            fixed[:, : len(ids)] = True
            return TextSamples(tokens, fixed, vocabulary, {k: v for k, v in options.items() if v is not None})
        x0, fixed = prompt_template(ids, length, path, n)
    else:
        if kind == "ar":
            raise ValueError("a template needs a masked or block model: the AR model only continues a prompt")
        if hole not in text:
            raise ValueError(f"template has no holes ({hole!r} characters) to fill")
        ids = _template_ids(vocabulary, text, hole)
        if padded(len(ids)) > cfg.length:
            unit = "characters" if vocabulary.is_characters else "tokens"
            raise ValueError(f"template has {len(ids)} {unit}, more than the context length {cfg.length}")
        x0, fixed = infill_template(ids, path, n)
    size = x0.shape[-1]
    extra = padded(size) - size
    assert path.mask_id is not None
    x0 = torch.cat([x0, torch.full((n, extra), path.mask_id, dtype=torch.long)], dim=-1).to(device)
    keep = torch.cat([fixed, torch.zeros(n, extra, dtype=torch.bool)], dim=-1).to(device)
    if block is None:
        tokens = CTMCSolver(path, network).sample(
            x0,
            steps=steps or size,
            generator=generator,
            fixed=keep,
            unmasking=unmasking,
            block_size=block_size,
            **options,
        )
    else:
        tokens = BlockDiffusion(path, block).sample(
            network, x0, steps=steps, generator=generator, fixed=keep, unmasking=unmasking, **options
        )
    settings = {k: v for k, v in {**options, "unmasking": unmasking}.items() if v is not None}
    return TextSamples(tokens[:, :size].cpu(), fixed, vocabulary, settings)
