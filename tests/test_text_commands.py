"""``rdfm text train`` / ``rdfm text sample`` end to end on a tiny corpus, their one-line errors,
and the library code they run: the autoregressive baseline's measures (dfm.autoregressive), the
vocabulary of a trained model (dfm.corpus) and the budget snapshots (gm.train.snapshots)."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from dfm import TextConfig, Vocabulary, load_text_run, sample_text
from dfm.autoregressive import (
    ar_bpc,
    ar_logits,
    ar_nll,
    ar_sample,
    generative_perplexity,
    sample_entropy_bits,
    unigram_bpc,
)
from dfm.text_model import build
from gm.cli import main
from gm.train import load_checkpoint
from gm.train.snapshots import BudgetSnapshots, checkpoint_elapsed_s

WORDS = "in the beginning god created the heaven and the earth and darkness was upon the face of deep".split()
TINY = ["--length", "32", "--width", "16", "--depth", "1", "--heads", "1", "--batch", "4", "--warmup-steps", "2"]
QUIET = ["--threads", "1", "--no-progress"]


def write_corpus(path, lines: int = 60):
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(lines)) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def train(corpus, out, *extra: str) -> int:
    return main(["text", "train", "--corpus", str(corpus), "--out", str(out), *TINY, *QUIET, *extra])


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    """A masked model trained for 4 steps (shared by the tests that sample it)."""
    root = tmp_path_factory.mktemp("text")
    corpus = write_corpus(root / "corpus.txt")
    assert train(corpus, root / "run", "--steps", "4") == 0
    return corpus, root / "run"


def test_train_writes_a_resumable_run_with_what_sampling_needs(masked_run, capsys):
    corpus, run = masked_run
    assert {"checkpoint.pt", "checkpoint.metrics.jsonl"} <= {p.name for p in run.iterdir()}
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["step"] == 4 and ck["run_config"]["model"] == "masked" and ck["run_config"]["width"] == 16
    assert set(ck["run_config"]["chars"]) == set(" \n" + "".join(WORDS))
    # resumed by default: two more steps on top of the four
    assert train(corpus, run, "--steps", "6") == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6
    assert "resuming from step 4" in capsys.readouterr().err
    # other settings: refused (not a traceback), the run is kept
    assert train(corpus, run, "--steps", "8", "--width", "32") == 2
    err = capsys.readouterr().err
    assert "was made with other settings" in err and "width: checkpoint 16, now 32" in err and "Traceback" not in err
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6


def test_sample_continues_a_prompt_and_fills_a_template(masked_run, capsys):
    _, run = masked_run
    argv = ["text", "sample", "--run", str(run), "--n", "2"]
    assert main([*argv, "--prompt", "in the be", "--length", "20", "--top-k", "3"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()  # one per sample, a newline shown as " | "
    assert len(lines) == 2 and all(line.startswith("in the be") for line in lines)
    assert all(len(line.replace(" | ", "\n")) == 20 for line in lines)
    assert err.startswith("[text sample] masked (") and "top_k=3" in err and "unmasking=random" in err
    assert main([*argv, "--template", "in the ___inning god", "--unmasking", "confidence"]) == 0
    for line in capsys.readouterr().out.splitlines():
        assert line.startswith("in the [") and line.endswith("]inning god") and line.count("[") == 3
    # reproducible given --seed
    assert main([*argv, "--prompt", "in", "--seed", "5"]) == 0
    first = capsys.readouterr().out
    assert main([*argv, "--prompt", "in", "--seed", "5"]) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "in the Z"], "error: --prompt has characters the model does not know: ['Z']"),
        (["--template", "no hole here"], "error: --template has no holes ('_' characters) to fill"),
        (["--template", "a__b", "--hole", "__"], "error: --hole must be one character"),
        (["--prompt", "in", "--length", "40"], "error: --length must be at most the context length 32"),
        (["--prompt", "in", "--top-p", "0"], "error: --top-p must be a number in (0, 1]"),
        (["--prompt", "a" * 40], "error: --prompt has 40 tokens: it must be shorter than the context length 32"),
    ],
)
def test_sample_refuses_bad_input_in_one_line(masked_run, capsys, extra, message):
    _, run = masked_run
    err = one_line_error(capsys, main(["text", "sample", "--run", str(run), *extra]))
    assert err.startswith(message)


def test_sample_of_a_missing_or_foreign_run_is_a_one_line_error(tmp_path, capsys):
    err = one_line_error(capsys, main(["text", "sample", "--run", str(tmp_path / "nope"), "--prompt", "in"]))
    assert "no trained text model in" in err and "rdfm text train" in err
    torch.save({"model": {}, "ema": {"shadow": {}}, "step": 1, "run_config": {"hidden": 8}}, tmp_path / "checkpoint.pt")
    err = one_line_error(capsys, main(["text", "sample", "--run", str(tmp_path), "--prompt", "in"]))
    assert "is not the checkpoint of a text model" in err


def test_train_refuses_bad_input_in_one_line(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt")
    err = one_line_error(capsys, train(tmp_path / "missing.txt", tmp_path / "r", "--steps", "1"))
    assert "corpus file not found" in err
    err = one_line_error(capsys, train(corpus, tmp_path / "r", "--steps", "1", "--model", "gpt"))
    assert "unknown model 'gpt'" in err
    err = one_line_error(capsys, train(corpus, tmp_path / "r", "--steps", "1", "--model", "block5"))
    assert "block size 5 does not divide the context length 32" in err
    err = one_line_error(capsys, train(corpus, tmp_path / "r", "--steps", "1", "--masked-loss", "nope"))
    assert "masked_loss must be 'elbo' or 'mean'" in err
    (tmp_path / "small.txt").write_text("a b\n" * 20, encoding="utf-8")  # validation: one line of 4 characters
    err = one_line_error(capsys, train(tmp_path / "small.txt", tmp_path / "r", "--steps", "1"))
    assert "too small for windows of 32 tokens" in err
    (tmp_path / "short.txt").write_text("one\ntwo\n", encoding="utf-8")
    err = one_line_error(capsys, train(tmp_path / "short.txt", tmp_path / "r", "--steps", "1"))
    assert "needs at least 20" in err
    err = one_line_error(capsys, train(corpus, tmp_path / "r", "--steps", "0"))
    assert "--steps must be >= 1" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_ar_and_block_models_train_and_sample(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "c.txt")
    assert train(corpus, tmp_path / "ar", "--steps", "2", "--model", "ar") == 0
    assert train(corpus, tmp_path / "b4", "--steps", "2", "--model", "block4") == 0
    capsys.readouterr()
    assert main(["text", "sample", "--run", str(tmp_path / "ar"), "--prompt", "the", "--n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("the") for line in lines)
    err = one_line_error(capsys, main(["text", "sample", "--run", str(tmp_path / "ar"), "--template", "a_b"]))
    assert "the AR model only continues a prompt" in err
    # a template shorter than a whole number of blocks is padded and cut back
    assert main(["text", "sample", "--run", str(tmp_path / "b4"), "--template", "in th_ be", "--n", "1"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("in th[") and line.endswith("] be") and len(line) == 11


def test_a_bpe_model_continues_prompts(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "c.txt", 200)
    assert train(corpus, tmp_path / "run", "--steps", "2", "--tokenizer", "bpe", "--bpe-vocab-size", "300") == 0
    run_config = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["run_config"]
    assert "chars" not in run_config and (tmp_path / "run" / run_config["tokenizer_file"]).is_file()
    model = load_text_run(tmp_path / "run")
    assert not model.vocabulary.is_characters and model.vocabulary.size <= 300
    samples = sample_text(model, prompt="in the beginning", n=2, length=12)
    assert samples.tokens.shape == (2, 12) and all(t.startswith("in the beginning") for t in samples.texts())


# ------------------------------------------------------------------------------------------------
# the library code behind the commands


def _ar_model(vocab: int = 5) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(TextConfig(length=16, width=16, depth=1, heads=2), vocab, causal=True).double().eval()


def test_ar_nll_and_bpc_are_the_sum_of_next_token_log_probabilities():
    model = _ar_model().requires_grad_(False)
    chunks = torch.randint(0, 5, (3, 7), generator=torch.Generator().manual_seed(1))
    expected = torch.zeros(3, dtype=torch.float64)
    for n in range(3):  # one prefix at a time: p(x_i | BOS, x_<i) from the last position's logits
        for i in range(7):
            prefix = torch.cat([torch.tensor([5]), chunks[n, :i]])[None]
            expected[n] -= torch.log_softmax(model(prefix)[0, -1].double(), -1)[chunks[n, i]]
    assert torch.allclose(ar_nll(model, chunks, batch=2), expected, atol=1e-9)
    assert ar_bpc(model, chunks, n_chars=42) == pytest.approx(float(expected.sum()) / 42 / math.log(2))
    assert generative_perplexity(model, chunks) == pytest.approx(math.exp(float(expected.sum()) / 21))
    direct = F.cross_entropy(ar_logits(model, chunks).transpose(1, 2), chunks, reduction="none").sum(-1)
    assert torch.allclose(direct, expected, atol=1e-9)
    with pytest.raises(ValueError, match="bos must be given"):
        ar_logits(torch.nn.Identity(), chunks)


def test_cached_ar_sampling_matches_decoding_without_the_cache():
    model = _ar_model()
    prompt = torch.tensor([1, 2])
    greedy = ar_sample(model, 2, 9, torch.Generator().manual_seed(0), prompt=prompt, top_k=1)
    x = prompt[None]
    while x.shape[1] < 9:  # full forward passes, the argmax each time
        x = torch.cat([x, ar_logits(model, torch.cat([x, x[:, :1]], 1))[:, -1:].argmax(-1)], 1)
    assert torch.equal(greedy, x.expand(2, -1))
    with pytest.raises(ValueError, match="shorter than the context length"):
        ar_sample(model, 1, 2, torch.Generator(), prompt=prompt)


def test_sample_entropy_bits_matches_a_per_sample_loop():
    def oracle(samples):
        total = 0.0
        for row in samples:
            p = torch.bincount(row).double()
            p = p[p > 0] / row.numel()
            total += float(-(p * torch.log2(p)).sum())
        return total / len(samples)

    g = torch.Generator().manual_seed(0)
    for vocab, shape in ((2, (1, 5)), (7, (4, 30)), (300, (8, 64))):
        samples = torch.randint(0, vocab, shape, generator=g)
        assert sample_entropy_bits(samples) == pytest.approx(oracle(samples), abs=1e-12)
    assert sample_entropy_bits(torch.zeros(3, 10, dtype=torch.long)) == 0.0
    assert sample_entropy_bits(torch.arange(8)[None]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="non-empty"):
        sample_entropy_bits(torch.zeros(0, 4, dtype=torch.long))


def test_unigram_bpc_is_the_add_one_smoothed_code_length():
    # counts (2, 1, 0) + 1 over 6 on test ids [0, 2]
    expected = -(math.log2(3 / 6) + math.log2(1 / 6)) / 2
    assert unigram_bpc(torch.tensor([0, 0, 1]), torch.tensor([0, 2]), 3) == pytest.approx(expected)
    assert unigram_bpc(torch.tensor([0, 0, 1]), torch.tensor([0, 2]), 3, n_chars=4) == pytest.approx(expected / 2)


def test_character_vocabulary():
    vocab = Vocabulary(chars="\n abc")
    ids = vocab.encode("ab c\n")
    assert ids.tolist() == [2, 3, 1, 4, 0] and vocab.decode(ids) == "ab c\n" and vocab.size == 5
    assert vocab.unknown("abzx") == ["x", "z"] and vocab.pieces(ids[:2]) == ["a", "b"]
    with pytest.raises(ValueError, match="exactly one"):
        Vocabulary()


def test_budget_snapshots_wrap_counts_steps_and_keeps_the_final_state(tmp_path):
    model = torch.nn.Linear(2, 2)
    snapshots = BudgetSnapshots(tmp_path / "s.pt", [], prior_s=0.0)  # no marks: the final state
    loss_fn, val_fn = snapshots.wrap(lambda m, step, g: torch.tensor(1.0), lambda m: 0.5)
    for step in range(3):
        loss_fn(model, step, torch.Generator())
    assert val_fn(model) == 0.5 and snapshots.begun
    assert torch.load(tmp_path / "s.pt", weights_only=False)["final"]["provisional"] is True
    saved = snapshots.finish()
    assert set(saved) == {"final"} and saved["final"]["step"] == 3 and saved["final"]["minutes"] is None
    assert "provisional" not in torch.load(tmp_path / "s.pt", weights_only=False)["final"]
    assert checkpoint_elapsed_s(tmp_path / "missing.pt") == 0.0
    torch.save({"elapsed": 12.5}, tmp_path / "ck.pt")
    assert checkpoint_elapsed_s(tmp_path / "ck.pt") == 12.5
    assert checkpoint_elapsed_s(tmp_path / "ck.pt", restart=True) == 0.0
