"""What a training step runs on the device besides the model and the optimiser, with no read-back
to the host: the model's device, ``torch.compile`` (``TrainConfig.compile``), TF32 matrix products
(``TrainConfig.tf32``), the running loss and non-finite check kept on the device, and the gradient
norm."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import cast

import torch
from torch import Tensor, nn


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


class _LossMonitor:
    """The running loss and the first non-finite loss of a single-process run, kept on the
    loss's device so that a training step reads nothing back; :meth:`read` brings them to the
    host (one synchronisation) at progress, validation and checkpoint time."""

    def __init__(self) -> None:
        self.running: Tensor | None = None  # 0.98-EMA of the loss, float32
        self.first_bad: Tensor | None = None  # step of the first non-finite loss, -1 if none
        self.bad_value: Tensor | None = None

    def record(self, loss: Tensor, step: int) -> None:
        value = loss.detach().float()
        if self.running is None or self.first_bad is None or self.bad_value is None:
            self.running = value.clone()
            first_bad = torch.full((), -1, dtype=torch.int64, device=value.device)
            bad_value = torch.zeros((), dtype=torch.float32, device=value.device)
        else:
            self.running.lerp_(value, 0.02)
            first_bad, bad_value = self.first_bad, self.bad_value
        new = ~torch.isfinite(value) & (first_bad < 0)
        self.first_bad = torch.where(new, torch.full_like(first_bad, step), first_bad)
        self.bad_value = torch.where(new, value, bad_value)

    def read(self) -> float | None:
        """The running loss; a ``FloatingPointError`` naming the step if a loss was not finite."""
        if self.running is None or self.first_bad is None or self.bad_value is None:
            return None
        running, first_bad, bad_value = torch.stack(
            [self.running.double(), self.first_bad.double(), self.bad_value.double()]
        ).tolist()
        if first_bad >= 0:
            raise FloatingPointError(
                f"non-finite loss {bad_value} at step {int(first_bad)} (rank 0); the last "
                "checkpoint, written before it, stands"
            )
        return running


def _gradient_norm(model: nn.Module) -> Tensor | None:
    """The global L2 norm of the gradients (as ``clip_grad_norm_`` measures it), on the device."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    total = getattr(nn.utils, "get_total_norm", None)  # torch >= 2.6
    if total is not None:
        return total(grads)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))


def _compiled(model: nn.Module, setting: bool | str, *, fullgraph: bool) -> nn.Module:
    """``model`` itself, or compiled as ``TrainConfig.compile`` says."""
    if setting is False:
        return model
    # an OptimizedModule: called like the model, sharing its parameters
    return cast(nn.Module, torch.compile(model, fullgraph=fullgraph, mode=None if setting is True else setting))


@contextlib.contextmanager
def _tensor_float32(enabled: bool) -> Iterator[None]:
    """CUDA's TF32 switches for matrix products and cuDNN set to ``enabled`` inside the block,
    restored after."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _tf32_for_training(fn: Callable) -> Callable:
    """Run ``train`` with TF32 on where ``TrainConfig.tf32`` asks for it and the model is on
    CUDA, and the previous switches restored however it ends (return or exception)."""

    @functools.wraps(fn)
    def wrapper(model, loss_fn, config, *args, **kwargs):
        use = getattr(config, "tf32", False) and isinstance(model, nn.Module) and _model_device(model).type == "cuda"
        with _tensor_float32(True) if use else contextlib.nullcontext():
            return fn(model, loss_fn, config, *args, **kwargs)

    return wrapper
