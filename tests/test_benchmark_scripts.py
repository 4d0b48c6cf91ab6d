"""The SO(3) mixture's true density (normalisation, closed form) and tiny end-to-end runs of
the benchmark scripts (a few seconds each) that must write valid results records."""

import json
import math
from dataclasses import replace

import pytest
import torch

from benchmarks import earth, so3, text
from benchmarks.earth_data import earth_path
from benchmarks.results import load_results
from benchmarks.text_data import kjv_path
from gm.cli import CommandLineError
from manifolds import SO3, so3_exp


def test_so3_mixture_density_is_normalised_and_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    mix = so3.WrappedNormalMixture.random(4, g)
    assert bool(((mix.sigmas > 0.07) & (mix.sigmas < 0.14)).all())  # tau ~ Gamma(100, 1)
    r = SO3().random_base(200000, generator=g, dtype=torch.float64)
    ratio = torch.exp(mix.log_prob(r) + math.log(8 * math.pi**2))  # p / Haar density
    assert abs(float(ratio.mean()) - 1) < 4 * float(ratio.std()) / math.sqrt(len(ratio))
    # one component at the identity: p(exp(hat w)) = N(w; 0, s^2) |w|^2 / (2 (1 - cos|w|))
    one = so3.WrappedNormalMixture(torch.eye(3, dtype=torch.float64)[None], torch.tensor([0.3], dtype=torch.float64))
    w = torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.0, 1e-6]], dtype=torch.float64)
    theta = w.norm(dim=-1)
    expected = (
        -0.5 * theta**2 / 0.09
        - 1.5 * math.log(2 * math.pi * 0.09)
        + torch.log(theta**2 / (2 * (1 - torch.cos(theta))).clamp_min(1e-300))
    )
    expected[1] = -0.5 * theta[1] ** 2 / 0.09 - 1.5 * math.log(2 * math.pi * 0.09)
    torch.testing.assert_close(one.log_prob(so3_exp(w)), expected, rtol=1e-9, atol=1e-9)
    # samples concentrate where the density is: mean log-density of samples beats Haar points
    x = mix.sample(2000, g)
    assert float(mix.log_prob(x).mean()) > float(mix.log_prob(r[:2000]).mean()) + 5


def test_so3_script_tiny_run(tmp_path):
    cfg = so3.SO3Config(
        hidden=16, depth=1, batch=32, warmup_steps=2, eval_every_minutes=0.02, val_steps=2, test_steps=2
    )
    rec = so3.run(4, 0, 0.03, cfg, tmp_path, sizes=(300, 50, 50), progress=False)
    assert rec["benchmark"] == "so3" and rec["steps"] > 0
    assert math.isfinite(rec["test_loglik"]) and math.isfinite(rec["true_test_loglik"])
    assert load_results(tmp_path)[0]["dataset"] == "M4"
    # the checkpoint resumes under a longer budget or more test steps, never under another model
    longer = so3.run(4, 0, 0.04, replace(cfg, test_steps=4), tmp_path, sizes=(300, 50, 50), progress=False)
    assert longer["steps"] >= rec["steps"]
    with pytest.raises(ValueError, match="hidden: checkpoint 16, now 32"):
        so3.run(4, 0, 0.04, replace(cfg, hidden=32), tmp_path, sizes=(300, 50, 50), progress=False)


@pytest.mark.skipif(not earth_path("volcano").exists(), reason="Earth data not available (set RDFM_DATA_DIR)")
def test_earth_script_tiny_run(tmp_path):
    cfg = earth.EarthConfig(
        hidden=16, depth=1, batch=32, warmup_steps=2, eval_every_minutes=0.02, val_steps=2, test_steps=2
    )
    rec = earth.run("volcano", 0, 0.03, cfg, tmp_path, progress=False, plot=True)
    assert math.isfinite(rec["test_nll"]) and rec["n_test"] == 82
    saved = json.loads((tmp_path / "volcano" / "seed0" / "results.json").read_text())
    assert saved["test_nll"] == rec["test_nll"]
    assert (tmp_path / "volcano" / "seed0" / "volcano_seed0.png").stat().st_size > 10000
    # the default mixed precision is resolved for this machine and recorded with its reason
    from gm import resolve_precision

    expected = resolve_precision("auto", "cpu")
    assert saved["config"]["mixed_precision"] == "auto"
    assert saved["precision"] == expected.name and saved["precision_reason"] == expected.reason


@pytest.mark.skipif(not earth_path("volcano").exists(), reason="Earth data not available (set RDFM_DATA_DIR)")
def test_earth_main_logs_the_precision_choice_and_a_forced_float32_run(tmp_path, capsys):
    argv = [
        "--quick",
        "--steps",
        "30",
        "--mixed-precision",
        "off",
        "--hidden",
        "8",
        "--depth",
        "1",
        "--no-plot",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert earth.main(argv) == 0
    out = capsys.readouterr().out
    assert "[earth] mixed precision off -> float32 (float32 requested)" in out
    saved = json.loads((tmp_path / "volcano" / "seed0" / "results.json").read_text())
    assert saved["precision"] == "float32" and saved["steps"] == 30 and saved["budget_steps"] == 30


@pytest.mark.skipif(not kjv_path().exists(), reason="KJV text not available (set RDFM_DATA_DIR)")
def test_text_unigram_and_ar_bpc_helpers():
    ids = torch.tensor([0, 0, 1, 2])
    # add-one smoothed unigram: counts (3, 2, 2) / 7 on test ids [0, 1]
    expected = -(math.log2(3 / 7) + math.log2(2 / 7)) / 2
    assert text.unigram_bpc(ids, torch.tensor([0, 1]), 3) == pytest.approx(expected)
    model = text.build(text.QUICK, 5, causal=True)
    chunks = torch.randint(0, 5, (3, 8))
    # an untrained AR model is close to uniform: ~log2(5) bits
    assert text.ar_bpc(model, chunks) == pytest.approx(math.log2(5), rel=0.3)


def test_text_script_trains_only_the_requested_model(tmp_path, monkeypatch):
    from benchmarks.text_data import Corpus

    body = "in the beginning god created the heaven and the earth. " * 40
    monkeypatch.setattr(
        text, "load_kjv", lambda: Corpus(train=body * 4, val=body, test=body, chars=" .abcdefghilnortvw")
    )
    argv = [
        "--quick",
        "--minutes",
        "0.03",
        "--models",
        "masked",
        "--time-conditioning",
        "false",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    record = json.loads((tmp_path / "results_seed0.json").read_text())
    assert record["models"] == ["masked"] and record["config"]["time_conditioning"] is False
    assert "ar_bpc" not in record and "ratio" not in record  # nothing invented for the model not trained
    # the bound of a barely trained model sits between the data's entropy and the uniform code
    assert 1.0 < record["masked_bpc"] < 1.5 * math.log2(18)
    assert record["masked_steps"] > 0 and record["steps"] == record["masked_steps"]


def test_text_script_scores_bpe_models_per_character(tmp_path, monkeypatch):
    from benchmarks.text_data import Corpus

    monkeypatch.setenv("RDFM_CACHE_DIR", str(tmp_path / "cache"))
    body = "in the beginning god created the heaven and the earth. " * 40
    monkeypatch.setattr(
        text, "load_kjv", lambda: Corpus(train=body * 4, val=body, test=body, chars=" .abcdefghilnortvw")
    )
    argv = [
        "--quick",
        "--minutes",
        "0.03",
        "--models",
        "ar",
        "--tokenizer",
        "bpe",
        "--bpe-vocab-size",
        "300",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    record = json.loads((tmp_path / "results_seed0.json").read_text())
    assert record["models"] == ["ar"] and "masked_bpc" not in record
    # 32 windows of 64 BPE tokens cover several characters per token on this repetitive text
    assert record["test_chars"] > 2 * record["test_tokens"]
    # per character: the saved model's exact bits per TOKEN, rescaled by tokens / characters
    # (independent of how far the seconds-long training got on a loaded machine)
    from benchmarks.text_data import eval_chunks, tokenize_corpus

    streams = tokenize_corpus(text.load_kjv(), "bpe", 300)
    chunks = eval_chunks(streams.test, text.QUICK.length, text.QUICK.eval_chunks)
    model = text.build(text.QUICK, streams.vocab_size, causal=True)
    model.load_state_dict(torch.load(tmp_path / "ar_seed0.pt", weights_only=False)["best_state"], strict=False)
    model.eval()
    per_token = text.ar_bpc(model, chunks)
    assert record["ar_bpc"] == pytest.approx(per_token * record["test_tokens"] / record["test_chars"], rel=1e-5)
    assert record["unigram_bpc"] < math.log2(300) * record["test_tokens"] / record["test_chars"]


def test_so3_script_makes_exactly_the_steps_asked_for(tmp_path):
    argv = [
        "--quick",
        "--steps",
        "7",
        "--components",
        "4",
        "--hidden",
        "8",
        "--depth",
        "1",
        "--batch",
        "16",
        "--val-steps",
        "1",
        "--test-steps",
        "2",
        "--eval-every-minutes",
        "0.1",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert so3.main(argv) == 0
    record = json.loads((tmp_path / "M4" / "seed0" / "results.json").read_text())
    assert record["steps"] == 7 and record["budget_steps"] == 7
    assert "budget_minutes" not in record  # no time limit was set
    # validated as often as the time budget would have (--quick: 0.3 min, every 0.1 min: 3 times),
    # every ceil(7 / 3) steps, and at the end
    history = torch.load(tmp_path / "M4" / "seed0" / "checkpoint.pt", weights_only=False)["history"]
    assert [h["step"] for h in history] == [3, 6, 7]


def test_text_script_makes_exactly_the_steps_asked_for_per_model(tmp_path, monkeypatch):
    from benchmarks.text_data import Corpus

    body = "in the beginning god created the heaven and the earth. " * 40
    monkeypatch.setattr(
        text, "load_kjv", lambda: Corpus(train=body * 4, val=body, test=body, chars=" .abcdefghilnortvw")
    )
    argv = [
        "--quick",
        "--steps",
        "10",
        "--minutes",
        "5",
        "--width",
        "16",
        "--depth",
        "1",
        "--heads",
        "1",
        "--eval-chunks",
        "8",
        "--sample-steps",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    record = json.loads((tmp_path / "results_seed0.json").read_text())
    # the default models: ar, masked and block diffusion at b = 4, 8, 16, ten steps each
    assert record["models"] == ["ar", "masked", "block4", "block8", "block16"]
    assert all(record[f"{m}_steps"] == 10 for m in record["models"]) and record["steps"] == 50
    # --quick caps each model's minutes at its share of the quick budget; the steps end the runs first
    assert record["budget_steps"] == 10 and record["budget_minutes"] == pytest.approx(text.QUICK_MINUTES / 5)
    for name in record["models"]:  # five validations, every ceil(10 / 5) steps
        history = torch.load(tmp_path / f"{name}_seed0.pt", weights_only=False)["history"]
        assert [h["step"] for h in history] == [2, 4, 6, 8, 10]


def _toy_corpus(monkeypatch):
    from benchmarks.text_data import Corpus

    body = "in the beginning god created the heaven and the earth. " * 40
    monkeypatch.setattr(
        text, "load_kjv", lambda: Corpus(train=body * 4, val=body, test=body, chars=" .abcdefghilnortvw")
    )


def test_text_sample_mode_completes_prompts_and_fills_templates(tmp_path, monkeypatch, capsys):
    from gm.cli import CommandLineError

    _toy_corpus(monkeypatch)
    argv = [
        "--quick",
        "--steps",
        "3",
        "--models",
        "ar",
        "masked",
        "block4",
        "--width",
        "16",
        "--depth",
        "1",
        "--heads",
        "1",
        "--eval-chunks",
        "8",
        "--n-samples",
        "2",
        "--sample-steps",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    record = json.loads((tmp_path / "results_seed0.json").read_text())
    assert record["models"] == ["ar", "masked", "block4"]
    for name in ("masked", "block4"):  # generative perplexity under this run's AR model, entropy of the samples
        for entry in record["results"][name]["samples"]:
            assert entry["gen_ppl"] > 1 and 0 < entry["entropy"] <= math.log2(18)
    capsys.readouterr()
    for model in ("ar", "masked", "block4"):
        assert (
            text.main(
                [
                    "sample",
                    "--out",
                    str(tmp_path),
                    "--model",
                    model,
                    "--prompt",
                    "in the be",
                    "--n",
                    "2",
                    "--length",
                    "30",
                    "--top-k",
                    "3",
                ]
            )
            == 0
        )
        lines = capsys.readouterr().out.strip().splitlines()  # the settings line goes to stderr
        assert len(lines) == 2 and all(line.startswith("in the be") and len(line) == 30 for line in lines)
    for model in ("masked", "block4"):  # holes filled in place; a template shorter than a block multiple is padded
        template = "in the ___inning god"
        assert (
            text.main(
                [
                    "sample",
                    "--out",
                    str(tmp_path),
                    "--model",
                    model,
                    "--template",
                    template,
                    "--n",
                    "2",
                    "--unmasking",
                    "confidence",
                ]
            )
            == 0
        )
        lines = capsys.readouterr().out.strip().splitlines()  # the settings line goes to stderr
        for line in lines:
            assert line.startswith("in the [") and line.endswith("]inning god") and line.count("[") == 3
    bad = [
        (["--prompt", "a" * 70], "shorter than the context"),
        (["--prompt", "in the Z"], "does not know"),
        (["--prompt", "in", "--top-p", "0"], "--top-p must be"),  # named as the option
        (["--prompt", "in", "--top-k", "0"], "--top-k must be"),
        (["--template", "no hole here"], "no hole"),
    ]
    for extra, message in bad:
        with pytest.raises(CommandLineError, match=message):
            text.main(["sample", "--out", str(tmp_path), "--model", "masked", *extra])
    with pytest.raises(CommandLineError, match="AR model only continues"):
        text.main(["sample", "--out", str(tmp_path), "--model", "ar", "--template", "in __ be"])


def test_text_curve_snapshots_come_from_one_run(tmp_path, monkeypatch):
    _toy_corpus(monkeypatch)
    argv = [
        "--quick",
        "--minutes",
        "0.06",
        "--curve",
        "0.03",
        "--models",
        "masked",
        "--width",
        "16",
        "--depth",
        "1",
        "--heads",
        "1",
        "--eval-chunks",
        "8",
        "--n-samples",
        "2",
        "--sample-steps",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    assert text.main(argv) == 0
    curve = json.loads((tmp_path / "results_seed0.json").read_text())["results"]["masked"]["curve"]
    assert [c["minutes"] for c in curve] == [0.03, 0.06]
    assert 0 < curve[0]["steps"] < curve[1]["steps"]
    assert curve[0]["elapsed_s"] <= 0.03 * 60 + 3 and curve[1]["elapsed_s"] <= 0.06 * 60 + 3
    snaps = torch.load(tmp_path / "masked_seed0_snapshots.pt", weights_only=False)
    assert set(snaps) == {0.03, 0.06}
    with pytest.raises(CommandLineError, match="--curve takes wall-clock"):
        text.main([*argv, "--steps", "3"])


def test_user_corpus_is_split_by_lines(tmp_path):
    from benchmarks.text_data import load_text_corpus

    lines = [f"verse {i}" for i in range(40)]
    (tmp_path / "c.txt").write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_text_corpus(tmp_path / "c.txt")
    assert corpus.test == "verse 10\nverse 30\n" and corpus.val == "verse 5\nverse 25\n"
    assert corpus.train.count("\n") == 36 and set(corpus.chars) == set("verse 0123456789\n")
    (tmp_path / "short.txt").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match="at least 20"):
        load_text_corpus(tmp_path / "short.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe" * 50)
    with pytest.raises(ValueError, match="not UTF-8"):
        load_text_corpus(tmp_path / "bin.txt")


def test_text_snapshots_survive_an_interruption_after_their_mark(tmp_path):
    # a provisional state (written at every take) whose mark has passed when the run resumes is kept
    model = torch.nn.Linear(2, 2)
    from gm.train.snapshots import BudgetSnapshots

    snaps = BudgetSnapshots(tmp_path / "s.pt", [0.5, 1.0], prior_s=0.0)
    snaps.step = 7
    snaps.take(model)  # now < both deadlines: provisional for both, on disk already
    resumed = BudgetSnapshots(tmp_path / "s.pt", [0.5, 1.0], prior_s=40.0)  # past 0.5 min, before 1.0 min
    assert set(resumed.saved) == {0.5} and set(resumed.pending) == {1.0}
    assert resumed.saved[0.5]["step"] == 7 and "provisional" not in resumed.saved[0.5]
    assert all(v.device.type == "cpu" for v in resumed.saved[0.5]["state"].values())
    with pytest.raises(CommandLineError, match="unknown model"):
        text.model_kind("masked-nonsense")
