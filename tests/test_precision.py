"""gm.train.precision (old path gm.precision): bfloat16 autocast only where the hardware runs it
natively (the issue's AVX2 machine trained 8x slower under a bf16 default)."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from gm.train import precision
from gm.train.precision import native_bfloat16, resolve_precision


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be an x86 CPU with the given flags and torch kernel capability."""

    def set_cpu(flags, capability="AVX512", machine="x86_64", isa_cap=None):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(platform, "machine", lambda: machine)
        if isa_cap is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa_cap)

    return set_cpu


def test_auto_is_float32_on_an_avx2_only_cpu(cpu):
    cpu({"avx2", "fma"}, capability="AVX2")
    choice = resolve_precision("auto", "cpu")
    assert choice.autocast_dtype is None and choice.name == "float32"
    assert "without AVX512-BF16 or AMX" in choice.reason
    assert choice.describe().startswith("mixed precision auto -> float32 (")


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_is_bfloat16_with_native_cpu_support(cpu, flag):
    cpu({"avx2", "avx512f", flag})
    choice = resolve_precision("auto", "cpu")
    assert choice.autocast_dtype is torch.bfloat16 and choice.name == "bf16" and flag in choice.reason


def test_capped_kernels_count_as_emulated(cpu):
    cpu({"avx512f", "avx512_bf16"}, capability="AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert resolve_precision("auto").autocast_dtype is None
    cpu({"avx512f", "avx512_bf16"}, isa_cap="AVX2")
    assert "ONEDNN_MAX_CPU_ISA" in resolve_precision("auto").reason
    cpu({"avx512f", "avx512_bf16"}, isa_cap="AVX512_CORE_BF16")
    assert resolve_precision("auto").autocast_dtype is torch.bfloat16


def test_arm_and_unknown_architectures(cpu):
    cpu({"asimd", "bf16"}, machine="aarch64")
    assert native_bfloat16("cpu")[0]
    cpu({"asimd"}, machine="aarch64")
    assert not native_bfloat16("cpu")[0]
    cpu(set(), machine="riscv64")
    assert not native_bfloat16("cpu")[0]


def test_forced_modes_and_bad_modes():
    assert resolve_precision("bf16").autocast_dtype is torch.bfloat16
    assert resolve_precision("off").autocast_dtype is None
    assert resolve_precision(True).name == "bf16" and resolve_precision(False).name == "float32"
    with pytest.raises(ValueError, match=r"mixed_precision must be one of \('auto', 'bf16', 'off'\), got 'fp8'"):
        resolve_precision("fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_cuda_without_a_gpu_is_not_native():
    native, reason = native_bfloat16("cuda")
    assert not native and "CUDA is not available" in reason


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 kernel cap")
def test_a_process_with_torch_capped_at_avx2_chooses_float32():
    # the real detection, in a fresh process whose torch kernels are capped below AVX512
    code = "from gm import resolve_precision; print(resolve_precision('auto').name)"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "float32"
