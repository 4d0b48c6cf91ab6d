"""The old path of :mod:`gm.train.metrics` (the trainer's metrics: a JSON-lines file per run,
TensorBoard events, Weights & Biases, a loss-curve plot), where the code lives now; this module
re-exports its names."""

from gm.train.metrics import MetricsLog as MetricsLog  # not in __all__, as before
from gm.train.metrics import metrics_path_for, plot_metrics, read_metrics

__all__ = ["read_metrics", "plot_metrics", "metrics_path_for"]
