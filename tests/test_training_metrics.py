"""The trainer's metrics file (gm.train.metrics): rows against hand-computed losses, gradient
norms and learning rates, validation rows, resumption, torn files, the plot, and the W&B and
TensorBoard sinks."""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import replace

import pytest
import torch
from torch import nn

from gm.train import TrainConfig, lr_factor, train
from gm.train import loop as training_loop
from gm.train.metrics import metrics_path_for, plot_metrics, read_metrics


def scalar_problem():
    """One weight w, loss (w - 3)^2: the gradient norm before clipping is |2 (w - 3)|, known
    from the weight each step starts from."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    seen = []

    def loss_fn(m, step, generator):
        w = m.weight.detach().clone().reshape(())
        seen.append((step, float(w)))
        return ((m.weight - 3.0) ** 2).sum()

    return model, loss_fn, seen


def test_every_row_is_the_step_loss_norm_and_lr(tmp_path):
    model, loss_fn, seen = scalar_problem()
    cfg = TrainConfig(
        lr=0.05, warmup_steps=3, max_steps=12, grad_clip=None, log_every_s=0.0, progress=False, eval_every=4
    )
    result = train(
        model,
        loss_fn,
        cfg,
        val_fn=lambda m: float((m.weight.detach() - 3.0).abs().sum()),
        checkpoint_path=tmp_path / "run.pt",
    )
    rows = read_metrics(tmp_path / "run.metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 13)) and all(r["steps"] == 1 for r in train_rows)
    for row, (step, w) in zip(train_rows, seen):
        assert row["step"] == step + 1
        assert row["loss"] == pytest.approx((w - 3.0) ** 2, rel=1e-6)
        assert row["grad_norm"] == pytest.approx(abs(2 * (w - 3.0)), rel=1e-6)
        assert row["lr"] == pytest.approx(0.05 * lr_factor(step, step / 12, 3, cfg.min_lr_ratio))
        assert row["step_ms"] >= 0
    vals = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in vals] == [4, 8, 12]
    assert [r["val"] for r in vals] == pytest.approx([h["val"] for h in result.history])
    # the plot beside it (matplotlib is a bench/proteins dependency)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "run.metrics.png").stat().st_size > 1000


def test_rows_average_the_steps_between_them(tmp_path, monkeypatch):
    model, loss_fn, seen = scalar_problem()
    clock = iter(range(10_000))
    # the trainer's clock advances one "second" per reading
    monkeypatch.setattr(training_loop, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    cfg = TrainConfig(lr=0.05, warmup_steps=1, max_steps=20, grad_clip=0.5, log_every_s=6.0, progress=False)
    train(model, loss_fn, cfg, metrics_path=tmp_path / "m.jsonl")
    rows = read_metrics(tmp_path / "m.jsonl")
    assert sum(r["steps"] for r in rows) == 20 and len(rows) > 2 and rows[-1]["step"] == 20
    first = 0
    for row in rows:
        losses = [(w - 3.0) ** 2 for _, w in seen[first : row["step"]]]
        norms = [abs(2 * (w - 3.0)) for _, w in seen[first : row["step"]]]  # before clipping
        assert row["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
        assert row["grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-6)
        first = row["step"]


def test_a_resumed_run_keeps_the_rows_up_to_its_checkpoint(tmp_path):
    model, loss_fn, _ = scalar_problem()
    cfg = TrainConfig(lr=0.05, warmup_steps=1, max_steps=10, log_every_s=0.0, progress=False)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck)
    path = metrics_path_for(ck)
    with open(path, "a") as handle:  # rows a killed run wrote after its last checkpoint, one torn
        handle.write(json.dumps({"kind": "train", "step": 11, "loss": 1.0}) + "\n" + '{"kind": "tr')
    train(model, loss_fn, replace(cfg, max_steps=15), checkpoint_path=ck)
    steps = [r["step"] for r in read_metrics(path)]
    assert steps == list(range(1, 16))
    # a fresh run (no checkpoint to resume) starts a fresh file
    ck.unlink()
    train(model, loss_fn, replace(cfg, max_steps=3), checkpoint_path=ck)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_read_metrics_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_metrics(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_metrics(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no training rows"):
        plot_metrics(empty)


def test_no_file_without_a_checkpoint_or_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, loss_fn, _ = scalar_problem()
    train(model, loss_fn, TrainConfig(max_steps=3, warmup_steps=1, progress=False))
    assert list(tmp_path.iterdir()) == []


def test_metrics_cost_no_read_back_in_a_step(host_reads, monkeypatch, tmp_path):
    """Rows read the device sums back only when written: with rows rarer than the run, the
    whole run makes two reads (the final loss and the final row)."""
    monkeypatch.setattr(training_loop, "_LOSS_READ_EVERY_S", 1e9)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    loss_fn = lambda m, step, gen: ((m(x) - y) ** 2).mean()  # noqa: E731
    cfg = TrainConfig(max_steps=30, warmup_steps=5, progress=False, log_every_s=1e9, loss_plot=False)
    host_reads.count = 0
    train(model, loss_fn, cfg, metrics_path=tmp_path / "m.jsonl")
    assert host_reads.count == 2, host_reads.where
    assert [r["steps"] for r in read_metrics(tmp_path / "m.jsonl")] == [30]


def test_wandb_gets_the_same_scalars(tmp_path, monkeypatch):
    logged, calls = [], []
    run = types.SimpleNamespace(
        log=lambda scalars, step: logged.append((step, scalars)),
        finish=lambda exit_code=0: calls.append(("finish", exit_code)),
    )
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    model, loss_fn, seen = scalar_problem()
    cfg = TrainConfig(
        lr=0.05,
        warmup_steps=1,
        max_steps=4,
        log_every_s=0.0,
        progress=False,
        eval_every=2,
        wandb_project="rdfm-test",
        loss_plot=False,
    )
    train(model, loss_fn, cfg, val_fn=lambda m: 1.5, metrics_path=tmp_path / "m.jsonl", run_config={"model": "scalar"})
    name, kwargs = calls[0]
    assert name == "init" and kwargs["project"] == "rdfm-test" and kwargs["resume"] == "allow"
    assert kwargs["config"]["model"] == "scalar" and kwargs["config"]["lr"] == 0.05  # run_config + TrainConfig
    assert calls[-1] == ("finish", 0)
    train_logs = [(s, d) for s, d in logged if "train/loss" in d]
    assert [s for s, _ in train_logs] == [1, 2, 3, 4]
    assert train_logs[0][1]["train/loss"] == pytest.approx((seen[0][1] - 3.0) ** 2)
    assert [(s, d) for s, d in logged if "val/val" in d] == [(2, {"val/val": 1.5}), (4, {"val/val": 1.5})]


def test_wandb_missing_is_a_value_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    model, loss_fn, _ = scalar_problem()
    with pytest.raises(ValueError, match="wandb_project='p' needs the wandb package"):
        train(model, loss_fn, TrainConfig(max_steps=2, warmup_steps=1, progress=False, wandb_project="p"))


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, loss_fn, _ = scalar_problem()
    cfg = TrainConfig(lr=0.05, warmup_steps=1, max_steps=5, log_every_s=0.0, progress=False, loss_plot=False)
    train(model, loss_fn, cfg, metrics_path=tmp_path / "m.jsonl")
    events = EventAccumulator(str(tmp_path / "m.tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(e.value) for e in events.Scalars("train/grad_norm"))


def test_bad_metric_settings_are_value_errors():
    model, loss_fn, _ = scalar_problem()
    for field, value in (("log_every_s", -1.0), ("log_every_s", float("nan")), ("wandb_project", "")):
        with pytest.raises(ValueError, match=field):
            train(model, loss_fn, TrainConfig(max_steps=1, progress=False, **{field: value}))


def test_a_failing_run_closes_its_sinks_and_marks_the_wandb_run(tmp_path, monkeypatch):
    calls = []
    run = types.SimpleNamespace(log=lambda scalars, step: None, finish=lambda exit_code=0: calls.append(exit_code))
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: run
    monkeypatch.setitem(sys.modules, "wandb", fake)
    model, loss_fn, _ = scalar_problem()

    def nan_at_three(m, step, generator):
        loss = loss_fn(m, step, generator)
        return loss * float("nan") if step == 3 else loss

    cfg = TrainConfig(max_steps=10, warmup_steps=1, progress=False, log_every_s=0.0, wandb_project="p")
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(model, nan_at_three, cfg, metrics_path=tmp_path / "m.jsonl")
    assert calls == [1]  # finished, as crashed
    rows = read_metrics(tmp_path / "m.jsonl")  # the file shows the divergence: NaN is written as null
    assert rows[3]["step"] == 4 and rows[3]["loss"] is None and rows[2]["loss"] is not None


def test_checkpoints_are_row_boundaries_and_not_step_time(tmp_path, monkeypatch):
    """A row is written before every checkpoint (a resume keeps every row up to it), and the
    time spent writing checkpoints is not counted in step_ms (a 0.4 s write, steps of < 1 ms)."""
    import time

    original = training_loop.save_checkpoint

    def slow_save(path, state):
        time.sleep(0.4)
        original(path, state)

    monkeypatch.setattr(training_loop, "save_checkpoint", slow_save)
    model, loss_fn, _ = scalar_problem()
    cfg = TrainConfig(max_steps=3, warmup_steps=1, progress=False, log_every_s=1e9, checkpoint_every_minutes=0.0)
    train(model, loss_fn, cfg, checkpoint_path=tmp_path / "run.pt")
    rows = read_metrics(tmp_path / "run.metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert max(r["step_ms"] for r in rows) < 200
