"""gm.train (the trainer; gm.training is its old path): the schedule, EMA arithmetic, atomic
checkpoints, exact resume, refused resumes and progress output."""

import io
import math
import re
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from gm.train import EMA, UNSET, CheckpointMismatchError, TrainConfig, lr_factor, save_checkpoint, train
from gm.train import loop as training_loop
from gm.train.step import _tensor_float32


def regression_problem():
    torch.manual_seed(0)
    w_true = torch.tensor([[2.0, -1.0, 0.5]])
    model = nn.Linear(3, 1)

    def loss_fn(m, step, gen):
        x = torch.randn(64, 3, generator=gen)
        return ((m(x) - x @ w_true.T) ** 2).mean()

    def val_fn(m):
        x = torch.linspace(-1, 1, 30).reshape(10, 3)
        return float(((m(x) - x @ w_true.T) ** 2).mean())

    return model, loss_fn, val_fn


def test_lr_schedule_values():
    assert lr_factor(0, 0.0, 10, 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 0.0, 10, 0.0) == pytest.approx(1.0)
    assert lr_factor(10, 0.5, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(10, 0.25, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_ema_matches_hand_computation():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    values, expected = [1.0, 2.0, 3.0], 0.0
    for n, v in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
    assert float(ema.shadow["weight"]) == pytest.approx(expected)
    with ema.apply_to(model):
        assert float(model.weight) == pytest.approx(expected)
    assert float(model.weight) == 3.0


def test_training_reduces_loss_and_selects_best_on_validation():
    model, loss_fn, val_fn = regression_problem()
    before = val_fn(model)
    res = train(
        model,
        loss_fn,
        TrainConfig(lr=0.05, max_steps=300, warmup_steps=10, eval_every=50, ema_decay=0.9, progress=False),
        val_fn=val_fn,
    )
    assert res.steps == 300 and res.best_val < 1e-3 * before
    assert [h["step"] for h in res.history] == [50, 100, 150, 200, 250, 300]
    assert res.best_val == min(h["val"] for h in res.history)
    with pytest.raises(ValueError, match="max_steps or max_minutes"):
        train(model, loss_fn, TrainConfig())


def test_time_budget_stops():
    model, loss_fn, _ = regression_problem()
    res = train(model, loss_fn, TrainConfig(max_minutes=0.02, progress=False))
    assert 1.0 <= res.wall_time_s < 10.0 and res.steps > 0


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"a": 1})

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"a": 2})
    monkeypatch.undo()
    assert torch.load(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_resume_after_a_crash_reproduces_an_uninterrupted_run(tmp_path):
    model_a, loss_fn, val_fn = regression_problem()
    cfg = TrainConfig(
        lr=0.02, warmup_steps=5, eval_every=20, progress=False, seed=3, max_steps=60, checkpoint_every_minutes=0.0
    )
    full = train(model_a, loss_fn, cfg, val_fn=val_fn)

    def crashing_loss(m, step, gen):
        if step == 41:
            raise KeyboardInterrupt("killed")
        return loss_fn(m, step, gen)

    ck = tmp_path / "run.pt"
    model_b, _, _ = regression_problem()
    with pytest.raises(KeyboardInterrupt):
        train(model_b, crashing_loss, cfg, val_fn=val_fn, checkpoint_path=ck)
    assert torch.load(ck, weights_only=False)["step"] == 41
    model_c, _, _ = regression_problem()  # a fresh process rebuilds the model
    resumed = train(model_c, loss_fn, cfg, val_fn=val_fn, checkpoint_path=ck)
    assert resumed.steps == 60
    for k, v in full.final_state.items():
        torch.testing.assert_close(resumed.final_state[k], v)
    assert resumed.best_val == pytest.approx(full.best_val)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]
    assert full.resumed_elapsed_s == 0.0 and 0.0 < resumed.resumed_elapsed_s <= resumed.wall_time_s


def test_resume_from_another_models_checkpoint_names_the_path(tmp_path):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=3)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck)
    other = torch.nn.Linear(7, 2)
    with pytest.raises(ValueError, match="checkpoint_path .*run.pt holds a different model"):
        train(other, lambda m, s, g: m(torch.zeros(1, 7)).sum(), cfg, checkpoint_path=ck)


def test_resume_with_changed_settings_names_them_and_budget_may_grow(tmp_path):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=3)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck, run_config={"hidden": 7, "scale": 16.0})
    with pytest.raises(ValueError, match=r"run.pt was made with other settings \(lr: checkpoint 0.02, now 0.01\)"):
        train(
            regression_problem()[0],
            loss_fn,
            replace(cfg, lr=0.01),
            checkpoint_path=ck,
            run_config={"hidden": 7, "scale": 16.0},
        )
    with pytest.raises(ValueError, match="scale: checkpoint 16.0, now 8.0"):
        train(regression_problem()[0], loss_fn, cfg, checkpoint_path=ck, run_config={"hidden": 7, "scale": 8.0})
    longer = train(
        regression_problem()[0],
        loss_fn,
        replace(cfg, max_steps=5, eval_every=2),
        checkpoint_path=ck,
        run_config={"hidden": 7, "scale": 16.0},
    )
    assert longer.steps == 5 and longer.resumed_elapsed_s > 0


def test_refused_resume_lists_each_difference_once(tmp_path):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=3)
    ck = tmp_path / "run.pt"
    # like the benchmark scripts, the run settings repeat the optimiser's lr and warmup
    settings = {"hidden": 7, "lr": 0.02, "warmup_steps": 1}
    train(model, loss_fn, cfg, checkpoint_path=ck, run_config=settings)
    with pytest.raises(CheckpointMismatchError) as refused:
        train(
            regression_problem()[0],
            loss_fn,
            replace(cfg, lr=0.01, seed=4),
            checkpoint_path=ck,
            run_config={**settings, "lr": 0.01, "dataset": "new"},
        )
    error = refused.value
    assert isinstance(error, ValueError) and error.checkpoint_path == ck
    assert error.differences == [("dataset", UNSET, "new"), ("lr", 0.02, 0.01), ("seed", 0, 4)]
    assert str(error).count("lr: checkpoint") == 1 and "dataset: checkpoint <unset>, now 'new'" in str(error)
    # progress settings, like the budget, may change on resuming
    resumed = train(
        regression_problem()[0],
        loss_fn,
        replace(cfg, progress_every_s=1.0, progress_bar=False),
        checkpoint_path=ck,
        run_config=settings,
    )
    assert resumed.steps == 3


def test_resumed_run_says_from_which_step(tmp_path, capsys):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, progress=False, seed=0, max_steps=4)
    ck = tmp_path / "run.pt"
    train(model, loss_fn, cfg, checkpoint_path=ck)
    assert capsys.readouterr().err == ""  # a fresh run with progress off is silent
    train(regression_problem()[0], loss_fn, replace(cfg, max_steps=6), checkpoint_path=ck)
    assert capsys.readouterr().err == f"train: {ck}: resuming from step 4 (0.0 minutes done)\n"


def test_progress_in_a_log_is_plain_lines(capsys):
    """Under pytest stderr is not a terminal, as in a CI log or under nohup: no tqdm bar and no
    carriage returns, but a first line, a line per progress_every_s and a last line."""
    model, loss_fn, val_fn = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, max_steps=4, eval_every=2, progress_every_s=0.0)
    train(model, loss_fn, cfg, val_fn=val_fn)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "train: starting, budget 4 steps"
    assert [line.split(",")[0] for line in lines[1:]] == [
        "train: step 1/4 (25.0%)",
        "train: step 2/4 (50.0%)",
        "train: step 3/4 (75.0%)",
        "train: step 4/4 (100.0%)",
        "train: done",
    ]
    assert lines[1].startswith("train: step 1/4 (25.0%), ") and " it/s, loss " in lines[1]
    assert re.search(r", best val -, \d\d:\d\d elapsed$", lines[1])  # no validation yet
    assert "best val " in lines[3] and "best val -" not in lines[3]  # validated at step 2
    # the default cadence (10 s): a short run prints only its first and last lines
    train(model, loss_fn, replace(cfg, progress_every_s=10.0, max_steps=None, max_minutes=0.001))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "train: starting, budget 0.001 min" and len(lines) == 2
    assert lines[1].startswith("train: done, step ") and "% of 0.001 min), " in lines[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_tqdm_bar_and_the_choice_can_be_forced(monkeypatch, capsys):
    model, loss_fn, _ = regression_problem()
    cfg = TrainConfig(lr=0.02, warmup_steps=1, max_steps=3, progress_every_s=0.0)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(model, loss_fn, cfg)
    assert "\r" in terminal.getvalue() and "train: step" not in terminal.getvalue()
    # forced plain lines on a terminal
    terminal.seek(0), terminal.truncate()
    train(model, loss_fn, replace(cfg, progress_bar=False))
    assert "\r" not in terminal.getvalue() and "train: step 3/3 (100.0%)" in terminal.getvalue()
    monkeypatch.undo()
    # forced bar off a terminal (pytest's stderr)
    train(model, loss_fn, replace(cfg, progress_bar=True))
    assert "\r" in capsys.readouterr().err


def test_train_returns_the_model_holding_the_selected_ema_weights(tmp_path):
    """Issue #28: examples sampled right after train() with the last raw weights. The model now
    holds best_state when train returns; load_best=False keeps the raw weights; a run extended
    from its checkpoint continues from the raw weights and optimiser exactly."""
    model, loss_fn, val_fn = regression_problem()
    # a constant learning rate after warmup (min_lr_ratio=1): 40 steps extended to 60 are 60 steps
    cfg = TrainConfig(
        lr=0.05,
        warmup_steps=5,
        eval_every=10,
        progress=False,
        seed=1,
        max_steps=40,
        checkpoint_every_minutes=0.0,
        ema_decay=0.9,
        min_lr_ratio=1.0,
    )
    ck = tmp_path / "run.pt"
    first = train(model, loss_fn, cfg, val_fn=val_fn, checkpoint_path=ck)
    assert first.best_state.keys() == {"weight", "bias"}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, first.best_state[k])
    assert not torch.equal(first.best_state["weight"], first.final_state["weight"])  # EMA != raw here
    assert float(val_fn(model)) == pytest.approx(first.best_val)
    again = train(model, loss_fn, cfg, val_fn=val_fn, checkpoint_path=ck)  # resumes at its end: nothing to do
    assert again.steps == 40
    for k, v in first.final_state.items():
        torch.testing.assert_close(again.final_state[k], v)  # the raw weights came back from the checkpoint
    # extending the run from its checkpoint equals one uninterrupted run of 60 steps
    extended = train(model, loss_fn, replace(cfg, max_steps=60), val_fn=val_fn, checkpoint_path=ck)
    straight_model, _, _ = regression_problem()
    straight = train(straight_model, loss_fn, replace(cfg, max_steps=60), val_fn=val_fn, load_best=False)
    for k, v in straight.final_state.items():
        torch.testing.assert_close(extended.final_state[k], v)
        torch.testing.assert_close(straight_model.state_dict()[k], v)  # load_best=False: the raw weights
    assert extended.best_val == pytest.approx(straight.best_val)


def test_progress_names_the_validation_value(capsys):
    """Issue #28: the demo's progress said "best val 1.7190" and its summary "val NLL 2.704"
    (two estimates of the same quantity): val_name says which one the trainer reports, and it
    may change on resume (display only)."""
    model, loss_fn, val_fn = regression_problem()
    cfg = TrainConfig(
        lr=0.02, warmup_steps=1, max_steps=2, eval_every=1, progress_every_s=0.0, val_name="val NLL (16 rk4 steps)"
    )
    train(model, loss_fn, cfg, val_fn=val_fn)
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.search(r", best val NLL \(16 rk4 steps\) \d+\.\d{4}, \d\d:\d\d elapsed$", last), last


def test_a_training_step_reads_nothing_back(host_reads, monkeypatch):
    """Issue #25: the step (loss, backward, clipping, AdamW, EMA, progress) makes no host read;
    the loss comes back at progress/validation/checkpoint time only."""
    monkeypatch.setattr(training_loop, "_LOSS_READ_EVERY_S", 1e9)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    loss_fn = lambda m, step, gen: ((m(x) - y) ** 2).mean()  # noqa: E731
    cfg = TrainConfig(max_steps=30, warmup_steps=5, progress=True, progress_bar=False, progress_every_s=0.0)
    host_reads.count = 0
    result = train(model, loss_fn, cfg)
    assert result.steps == 30
    assert host_reads.count == 1, host_reads.where  # the final loss read


def test_a_non_finite_loss_stops_the_run_naming_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model, loss_fn, _ = regression_problem()

    def bad_at_seven(m, step, gen):
        loss = loss_fn(m, step, gen)
        return loss * float("nan") if step == 7 else loss

    ck = tmp_path / "run.pt"
    cfg = TrainConfig(max_steps=20, warmup_steps=2, progress=False, checkpoint_every_minutes=0.0)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 7 \(rank 0\)"):
        train(model, bad_at_seven, cfg, checkpoint_path=ck)
    saved = torch.load(ck, weights_only=False)
    assert saved["step"] == 7  # steps 0..6, all finite
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert all(torch.isfinite(v).all() for v in saved["ema"]["shadow"].values())
    # without checkpoints or progress the run still stops, within the read interval
    with pytest.raises(FloatingPointError, match="at step 7"):
        train(regression_problem()[0], bad_at_seven, cfg)


def test_ema_update_is_the_hand_formula_on_every_tensor():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    ema = EMA(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    d = min(0.5, 2 / 11)
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(ema.shadow[k], d * before[k] + (1 - d) * v)


def test_compiled_training_equals_eager_training():
    """TrainConfig(compile=...) compiles the model for the steps (aot_eager here: the same
    arithmetic as eager, so the runs agree to rounding); a bad setting is a ValueError."""
    results = {}
    for setting in (False, "aot_eager"):
        model, loss_fn, val_fn = regression_problem()
        model = model.double()

        def loss64(m, step, gen):
            x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
            return ((m(x) - x @ torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64).T) ** 2).mean()

        cfg = TrainConfig(max_steps=20, warmup_steps=2, progress=False, compile=setting is not False)
        if setting == "aot_eager":  # the trainer's torch.compile with a test backend
            original = torch.compile
            torch.compile = lambda m, **kw: original(m, backend="aot_eager", fullgraph=kw["fullgraph"])
            try:
                results[setting] = train(model, loss64, cfg)
            finally:
                torch.compile = original
        else:
            results[setting] = train(model, loss64, cfg)
    for k, v in results[False].final_state.items():
        torch.testing.assert_close(results["aot_eager"].final_state[k], v, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="config.compile must be True, False or one of"):
        train(regression_problem()[0], regression_problem()[1], TrainConfig(max_steps=1, compile="fast"))


def test_tf32_switches_are_set_inside_and_restored_after():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with _tensor_float32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with _tensor_float32(False):  # validation inside a TF32 run
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    # a CPU run leaves them alone
    model, loss_fn, val_fn = regression_problem()
    seen = []
    train(
        model,
        loss_fn,
        TrainConfig(max_steps=2, progress=False, tf32=True),
        val_fn=lambda m: seen.append(torch.backends.cuda.matmul.allow_tf32) or val_fn(m),
    )
    assert seen == [before[0]]


def test_the_old_module_paths_re_export_the_trainer():
    """gm.training, gm.distributed, gm.precision and gm.training_metrics, the paths before gm.train,
    hand out the same objects; gm.training imports gm.distributed, which gm.cli looks up."""
    import gm.distributed
    import gm.precision
    import gm.training
    import gm.training_metrics
    from gm import train as package
    from gm.train import distributed, metrics, precision, progress

    for name in gm.training.__all__:
        assert getattr(gm.training, name) is getattr(package, name), name
    assert gm.training.is_interactive is progress.is_interactive
    for old, new in ((gm.distributed, distributed), (gm.precision, precision), (gm.training_metrics, metrics)):
        assert set(old.__all__) == set(new.__all__)
        for name in old.__all__:
            assert getattr(old, name) is getattr(new, name), name
    assert gm.distributed.rank_seed is distributed.rank_seed
    assert gm.training_metrics.MetricsLog is metrics.MetricsLog
    assert sys.modules["gm.distributed"] is gm.distributed


def test_train_config_from_a_model_config_takes_shared_fields_and_lets_settings_win():
    from dataclasses import dataclass

    @dataclass
    class ModelConfig:
        lr: float = 3e-4
        ema_decay: float = 0.99
        eval_every_minutes: float = 5.0
        seed: int = 7  # a model's seed is never the trainer's
        width: int = 64  # not a training setting

    config = TrainConfig.from_config(ModelConfig(), max_steps=10, eval_every_minutes=None, seed=1)
    assert (config.lr, config.ema_decay, config.max_steps, config.seed) == (3e-4, 0.99, 10, 1)
    assert config.eval_every_minutes is None  # an explicit None overrides the model's cadence
    assert TrainConfig.from_config(ModelConfig(), max_steps=1).seed == TrainConfig().seed
    with pytest.raises(ValueError, match="config must be a dataclass instance"):
        TrainConfig.from_config({"lr": 1.0}, max_steps=1)
    with pytest.raises(ValueError, match=r"settings has fields TrainConfig does not: \['widht'\]"):
        TrainConfig.from_config(ModelConfig(), max_steps=1, widht=3)


def test_validation_runs_at_the_first_step_past_each_minute_mark(monkeypatch):
    """eval_at_minutes: a validation at the first step past each mark, on top of (here: without)
    a cadence, and at the end. Clock: one fake second per step."""
    import types

    clock = [0.0]
    monkeypatch.setattr(training_loop, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    model = nn.Linear(1, 1)
    validated: list[int] = []
    steps = [0]

    def loss_fn(m, step, g):
        clock[0] += 1.0
        steps[0] = step + 1
        return m(torch.ones(1, 1)).pow(2).sum()

    def val_fn(m):
        validated.append(steps[0])
        return 0.0

    config = TrainConfig(max_minutes=1.0, eval_at_minutes=(0.25, 0.5), warmup_steps=1, progress=False)
    train(model, loss_fn, config, val_fn=val_fn)
    assert validated[:2] == [15, 30] and validated[-1] >= 59 and len(validated) == 3
    with pytest.raises(ValueError, match="eval_at_minutes must be a sequence of minutes > 0"):
        train(model, loss_fn, replace(config, eval_at_minutes=(0.0,)), val_fn=val_fn)


def test_budget_snapshots_at_step_marks_keep_the_last_state_at_or_before_each_mark(tmp_path):
    from gm.train.snapshots import BudgetSnapshots

    model = torch.nn.Linear(1, 1, bias=False)

    def run(snapshots, steps):
        loss_fn, val_fn = snapshots.wrap(lambda m, step, g: torch.zeros(()), lambda m: 0.0)
        for step in steps:
            loss_fn(model, step, None)
            if (step + 1) % 2 == 0:  # a validation every 2 steps
                with torch.no_grad():
                    model.weight.fill_(step + 1)  # the state "is" its step count
                val_fn(model)

    path = tmp_path / "snapshots.pt"
    run(BudgetSnapshots(path, [4, 8], prior_s=0.0, unit="steps"), range(6))  # interrupted after step 6
    resumed = BudgetSnapshots(path, [4, 8], prior_s=0.0, unit="steps")
    assert set(resumed.saved) == {4} and set(resumed.pending) == {8}  # 8's state so far (step 6) provisional
    run(resumed, range(6, 10))
    saved = resumed.finish()
    assert {k: (v["step"], float(v["state"]["weight"])) for k, v in saved.items()} == {4: (4, 4.0), 8: (8, 8.0)}
    assert saved[4]["minutes"] is None
    with pytest.raises(ValueError, match="unit must be"):
        BudgetSnapshots(path, [1], prior_s=0.0, unit="hours")


def test_budget_snapshots_final_state_follows_a_resumed_or_extended_run(tmp_path):
    from gm.train.snapshots import BudgetSnapshots

    model = torch.nn.Linear(1, 1, bias=False)
    path = tmp_path / "snapshots.pt"
    for weight, step in ((1.0, 10), (2.0, 20)):  # a step-budget run, then the same run extended
        snapshots = BudgetSnapshots(path, [], prior_s=0.0)
        snapshots.step = step
        with torch.no_grad():
            model.weight.fill_(weight)
        snapshots.take(model)
        saved = snapshots.finish()
        assert saved["final"]["step"] == step and float(saved["final"]["state"]["weight"]) == weight
