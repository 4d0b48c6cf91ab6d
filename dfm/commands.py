"""The ``rdfm`` subcommands of ``dfm`` (registered in pyproject.toml under ``rdfm.commands``):
``rdfm text train`` trains a text model on a user's UTF-8 file (:func:`dfm.text_model.train_text`)
and ``rdfm text sample`` continues a prompt or fills a template with it
(:func:`dfm.text_generation.sample_text`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import field, fields, make_dataclass
from typing import Any

from gm.cli import (
    EVALUATION_FIELDS,
    CommandLineError,
    add_config_overrides,
    add_run_arguments,
    add_subcommand,
    apply_config_overrides,
    check_device,
    rank_batch,
    run_budget,
    set_threads,
)

#: ``rdfm text train``'s default budget (minutes) and validations per run.
DEFAULT_MINUTES = 10.0
EVALUATIONS = 10

TRAIN_EXAMPLES = """\
  rdfm text train --corpus book.txt --out runs/book --minutes 10
  rdfm text train --corpus book.txt --out runs/book --minutes 30       # resume it, to 30 minutes in all
  rdfm text train --corpus book.txt --out runs/ar --model ar --steps 2000 --width 256 --depth 6
  rdfm text train --corpus book.txt --out runs/b16 --model block16 --device cuda --compile
  rdfm text train --corpus book.txt --out runs/book --restart           # start afresh

The corpus is split by lines (line k: test if k % 20 == 10, validation if k % 20 == 5, else
train; at least 20 non-empty lines). The run folder holds checkpoint.pt (resumed by default),
its metrics (checkpoint.metrics.jsonl) and loss plot (checkpoint.metrics.png)."""

SAMPLE_EXAMPLES = """\
  rdfm text sample --run runs/book --prompt "In the beginning"
  rdfm text sample --run runs/book --template "In the ____ God created" --unmasking confidence
  rdfm text sample --run runs/book --prompt "And" --n 5 --length 80 --temperature 0.8 --top-p 0.9
  rdfm text sample --run runs/ar --prompt "And God said" --top-k 10 --seed 3

Samples are printed one per line on stdout (a newline of the text as " | "); with --template the
generated characters are in brackets. A line on stderr names the model and the sampler."""


def _model_options() -> Any:
    """The :class:`~dfm.text_model.TextConfig` fields that define a run (not the benchmark's
    evaluation fields), as a dataclass instance for ``gm.cli.add_config_overrides``."""
    from dfm.text_model import TextConfig

    default = TextConfig()
    kept = [f for f in fields(TextConfig) if f.name not in EVALUATION_FIELDS]
    options = make_dataclass(
        "TextTrainOptions", [(f.name, f.type, field(default=getattr(default, f.name))) for f in kept]
    )
    return options()


def register(subcommands: Any) -> None:
    """Add ``rdfm text train`` and ``rdfm text sample`` (see :mod:`gm.cli`)."""
    text = subcommands.add_parser(
        "text",
        help="train masked, autoregressive or block-diffusion text models on your corpus; sample them",
        description="Text models on a UTF-8 file: `rdfm text train`, then `rdfm text sample`.",
    )
    commands = text.add_subparsers(dest="text_command", metavar="COMMAND", required=True)

    train = add_subcommand(
        commands,
        "train",
        run_train,
        help="train a text model on a UTF-8 text file (resumes its run folder)",
        examples=TRAIN_EXAMPLES,
    )
    train.add_argument("--corpus", required=True, metavar="FILE", help="UTF-8 text file (split by lines)")
    train.add_argument(
        "--model",
        default="masked",
        help="masked (masked discrete flow matching, default), ar (autoregressive) or blockB "
        "(block diffusion with blocks of B tokens, B dividing --length)",
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the training draws")
    add_run_arguments(train, minutes=DEFAULT_MINUTES, out=None)
    add_config_overrides(train, _model_options())

    sample = add_subcommand(
        commands,
        "sample",
        run_sample,
        help="continue a prompt or fill a template with a model of `rdfm text train`",
        examples=SAMPLE_EXAMPLES,
    )
    sample.add_argument(
        "--run", dest="run_dir", required=True, metavar="DIR", help="the run folder of `rdfm text train`"
    )  # not args.run: that is the command (gm.cli.add_subcommand)
    add_sampling_arguments(sample)


def run_train(args: argparse.Namespace) -> int:
    """``rdfm text train``."""

    from dfm.text_model import TextConfig, TextRunError, train_text

    check_device(args.device)
    config = apply_config_overrides(TextConfig(), args)
    nominal = DEFAULT_MINUTES if args.minutes is None else args.minutes
    budget = run_budget(
        args.minutes,
        args.steps,
        default_minutes=DEFAULT_MINUTES,
        eval_every_minutes=nominal / EVALUATIONS,
        evaluations=EVALUATIONS,
        compile=args.compile,
    )
    batch = rank_batch(config.batch)
    set_threads(args.threads)
    try:
        result = train_text(
            args.corpus,
            args.out,
            model=args.model,
            config=config,
            budget=budget.train_fields(),
            seed=args.seed,
            device=args.device,
            restart=args.restart,
            progress=not args.no_progress,
            batch=batch,
        )
    except TextRunError as error:
        raise CommandLineError(str(error)) from None
    if result.rank == 0:
        best = "" if result.best_val is None else f", best validation {result.best_val:.4f} nats per token"
        print(
            f"[text] {args.model}: {result.steps} steps{best}; "
            f"sample it with: rdfm text sample --run {args.out} --prompt TEXT"
        )
    return 0


def add_sampling_arguments(parser: argparse.ArgumentParser, *, seed_flag: str = "--seed") -> None:
    """The options of a sampling request (``rdfm text sample`` and ``python -m benchmarks text
    sample``): ``--prompt`` or ``--template``, the sampler's settings and the seed of the draws
    (``seed_flag``; stored as ``sample_seed``)."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", metavar="TEXT", help="text to continue")
    given.add_argument(
        "--template", metavar="TEXT", help="text with holes (--hole characters) to fill in place (masked, block)"
    )
    parser.add_argument("--hole", default="_", help="the hole character of --template (one character = one token)")
    parser.add_argument("--n", type=int, default=3, help="samples (default 3)")
    parser.add_argument(
        "--length", type=int, default=None, help="tokens in all, with the prompt (default: the context length)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="CTMC steps (default one per position; block models: per block)"
    )
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="keep the smallest set of probability >= p")
    parser.add_argument(
        "--unmasking",
        default="random",
        choices=["random", "random_order", "confidence"],
        help="which masked positions a step reveals (masked and block models)",
    )
    parser.add_argument("--block-size", type=int, default=None, help="masked model: semi-autoregressive blocks")
    parser.add_argument(seed_flag, dest="sample_seed", type=int, default=0, help="seed of the draws")


def check_sampling_request(args: argparse.Namespace) -> None:
    """The request's own problems, named in the command line's terms, before a model is loaded."""
    if len(args.hole) != 1:
        raise CommandLineError(f"--hole must be one character, got {args.hole!r}")
    if args.template is not None and args.hole not in args.template:
        raise CommandLineError(f"--template has no holes ({args.hole!r} characters) to fill")
    if args.n < 1:
        raise CommandLineError(f"--n must be a positive number of samples, got {args.n}")


def print_samples(model: Any, args: argparse.Namespace) -> None:
    """Sample ``model`` (a :class:`dfm.text_generation.TextModel`) as ``args`` asks
    (:func:`add_sampling_arguments`) and print one sample per line (generated characters of a
    template in brackets); the settings go to stderr."""
    from dfm.text_generation import sample_text

    try:
        samples = sample_text(
            model,
            prompt=args.prompt,
            template=args.template,
            hole=args.hole,
            n=args.n,
            length=args.length,
            steps=args.steps,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            unmasking=args.unmasking,
            block_size=args.block_size,
            seed=args.sample_seed,
        )
    except ValueError as error:
        # named in the command line's terms: "prompt has ..." -> "--prompt has ..."
        message = str(error)
        for name in ("prompt", "template", "length", "temperature", "top_k", "top_p", "steps"):
            if message.startswith(name + " "):
                message = f"--{name.replace('_', '-')}{message[len(name) :]}"
                break
        raise CommandLineError(message) from None
    settings = ", ".join(f"{k}={v}" for k, v in samples.settings.items())
    print(f"[text sample] {model.name} ({model.steps} steps), {settings}", file=sys.stderr)
    for line in samples.marked() if args.template is not None else samples.texts():
        print(line.replace("\n", " | "))


def run_sample(args: argparse.Namespace) -> int:
    """``rdfm text sample``."""
    from dfm.text_generation import load_text_run

    check_sampling_request(args)
    try:
        model = load_text_run(args.run_dir)
    except ValueError as error:
        raise CommandLineError(str(error)) from None
    print_samples(model, args)
    return 0
