"""The training-step table of `python -m benchmarks speed` (smoke test: structure, not timing)."""

import pytest
import torch

from benchmarks.speed_training import training_step_rows
from gm.profiling import count_host_reads, count_kernels


def test_training_step_rows_have_the_issue_columns():
    rows = training_step_rows("cpu", ["earth"], ("eager",), repeats=1, warmup=1, log=lambda _: None)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"model", "device", "mode", "bare_ms", "library_ms", "train_ms", "kernels", "syncs"}
    assert row["device"] == "cpu" and row["mode"] == "eager"
    assert all(row[k] > 0 for k in ("bare_ms", "library_ms", "train_ms", "kernels"))
    with pytest.raises(ValueError, match="models must be among"):
        training_step_rows("cpu", ["resnet"], log=lambda _: None)


def test_profiling_counts_reads_outside_torch_and_operators():
    x = torch.randn(4)
    with count_host_reads(cuda=False) as found:
        float(x.sum())
        x.tolist()
        torch.nn.functional.relu(x)
    assert found.reads == 2 and found.count == 2 and found.where[0].startswith("__float__ at ")
    assert count_kernels(lambda: (x + 1) * 2) >= 2
