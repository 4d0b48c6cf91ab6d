"""The old path of :mod:`gm.train.precision` (mixed precision chosen for the hardware it runs on),
where the code lives now; this module re-exports its names."""

from gm.train.precision import PRECISION_MODES, PrecisionChoice, native_bfloat16, resolve_precision

__all__ = ["PRECISION_MODES", "PrecisionChoice", "native_bfloat16", "resolve_precision"]
