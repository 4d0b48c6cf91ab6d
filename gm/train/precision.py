r"""Mixed precision chosen for the hardware it runs on.

bfloat16 autocast pays only where the device multiplies bfloat16 natively: on CUDA GPUs that
support it, and on CPUs with AVX512-BF16 or AMX (or ARM's BF16 extension). Elsewhere torch
emulates it, which is several times *slower* than float32 (a 256 x 4 MLP at batch 512 on one
AVX2 core: 12 ms per float32 step, 95 ms per bfloat16 step). So the default is ``"auto"``:
bfloat16 where it is native, float32 otherwise, decided at run time on the machine at hand.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache

import torch

__all__ = ["PRECISION_MODES", "PrecisionChoice", "native_bfloat16", "resolve_precision"]

#: accepted values of a ``mixed_precision`` setting
PRECISION_MODES = ("auto", "bf16", "off")

# CPU flags (Linux /proc/cpuinfo spelling) of native bfloat16 matrix arithmetic.
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags the OS reports (empty where it reports none we can read)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    if platform.system() == "Darwin":  # Apple silicon: M2 and later have FEAT_BF16
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            if out == "1":
                flags.add("bf16")
        except (OSError, subprocess.SubprocessError):
            pass
    return frozenset(flags)


def _cpu_bfloat16_reason() -> tuple[bool, str]:
    flags = _cpu_flags()
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        native = [f for f in _X86_BF16_FLAGS if f in flags]
        if not native:
            return False, "CPU without AVX512-BF16 or AMX: bfloat16 would be emulated"
        # torch's and oneDNN's kernels can be capped below the hardware (ATEN_CPU_CAPABILITY,
        # ONEDNN_MAX_CPU_ISA); then bfloat16 is emulated whatever the CPU has.
        capability = torch.backends.cpu.get_cpu_capability()
        if not capability.startswith("AVX512"):
            return False, f"torch CPU kernels capped at {capability}: bfloat16 would be emulated"
        isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
        if isa_cap and isa_cap != "ALL" and not any(k in isa_cap for k in ("BF16", "AMX", "AVX10")):
            return False, f"oneDNN capped at ONEDNN_MAX_CPU_ISA={isa_cap}: bfloat16 would be emulated"
        return True, f"CPU has {'/'.join(native)}"
    if machine in ("arm64", "aarch64"):
        if "bf16" in flags:
            return True, "ARM CPU with the BF16 extension"
        return False, "ARM CPU without the BF16 extension: bfloat16 would be emulated"
    return False, f"unknown CPU architecture {machine!r}: float32 to be safe"


def native_bfloat16(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether ``device`` executes bfloat16 matrix products natively, and why (one phrase).

    CUDA: ``torch.cuda.is_bf16_supported()`` of that device (Ampere and later). CPU: the
    AVX512-BF16 or AMX flags on x86 (with torch's kernels not capped below AVX512), the BF16
    extension on ARM. Other devices: no.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return True, f"{torch.cuda.get_device_name(device)} supports bfloat16"
            return False, f"{torch.cuda.get_device_name(device)} has no native bfloat16"
    if device.type == "cpu":
        return _cpu_bfloat16_reason()
    return False, f"device type {device.type!r}: float32 to be safe"


@dataclass(frozen=True)
class PrecisionChoice:
    """What a ``mixed_precision`` setting resolved to on a device.

    Attributes:
        mode: the setting as given (``"auto"``, ``"bf16"`` or ``"off"``).
        autocast_dtype: ``torch.bfloat16`` or ``None`` (float32 throughout).
        reason: why, in a few words (for logs and results files).
    """

    mode: str
    autocast_dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        """``"bf16"`` or ``"float32"``: what training actually runs in."""
        return "bf16" if self.autocast_dtype is not None else "float32"

    def describe(self) -> str:
        return f"mixed precision {self.mode} -> {self.name} ({self.reason})"


def resolve_precision(mode: str | bool, device: str | torch.device = "cpu") -> PrecisionChoice:
    """Resolve a ``mixed_precision`` setting for ``device``.

    Args:
        mode: ``"auto"`` (bfloat16 autocast only where :func:`native_bfloat16` says so),
            ``"bf16"`` (always; slow where emulated) or ``"off"`` (float32). ``True``/``False``
            are read as ``"bf16"``/``"off"``.
        device: where the model runs.
    """
    if isinstance(mode, bool):
        mode = "bf16" if mode else "off"
    if not isinstance(mode, str) or mode.lower() not in PRECISION_MODES:
        raise ValueError(f"mixed_precision must be one of {PRECISION_MODES}, got {mode!r}")
    mode = mode.lower()
    if mode == "off":
        return PrecisionChoice(mode, None, "float32 requested")
    if mode == "bf16":
        return PrecisionChoice(mode, torch.bfloat16, "bfloat16 requested")
    native, reason = native_bfloat16(device)
    return PrecisionChoice(mode, torch.bfloat16 if native else None, reason)
