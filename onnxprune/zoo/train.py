"""Train small zoo models on the digits28 set (CPU, deterministic for a seed).

Real weights make pruning measurable: a trained autoencoder's reconstruction PSNR and a trained
classifier's accuracy show what removing channels costs, where random weights show nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..recover.torch_threads import torch_threads
from .digits import digits28
from .torch_zoo import AutoEncoder, export_onnx

__all__ = [
    "DigitsCNN",
    "TrainResult",
    "accuracy",
    "export",
    "predict",
    "psnr",
    "train_autoencoder",
    "train_classifier",
]

# Intra-op threads while training. These batches are small: one thread is as fast as two on an
# idle 2-core machine and far faster on a busy one, where a second thread mostly waits.
THREADS = 1


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU stages (two max-pooled), global average pool, linear: 28x28 -> 10."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@dataclass
class TrainResult:
    """A trained model (in eval mode), its test score, the training time and per-epoch loss."""

    model: nn.Module
    score: float
    seconds: float
    losses: list[float] = field(default_factory=list)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over images (axis 0) of ``10 log10(1 / MSE)``, for values in ``[0, 1]``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {x.shape} vs {y.shape}")
    mse = np.mean((x - y).reshape(len(x), -1) ** 2, axis=1)
    return float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows of ``logits`` [N, C] whose argmax equals ``labels`` [N]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"accuracy: expected [N, C] and [N], got {logits.shape}, {labels.shape}")
    return float(np.mean(logits.argmax(axis=1) == labels))


def predict(model: nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """``model`` (in eval mode) on numpy ``x``, batched; numpy out."""
    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i : i + batch])) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def export(module: nn.Module, path: str | os.PathLike, input_shape: Sequence[int]) -> str:
    """Export ``module`` to ONNX with a dynamic batch axis (``input_shape`` excludes it)."""
    return export_onnx(module, path, input_shape, dynamic_batch=True)



def _train(
    build: Callable[[], nn.Module],
    x: np.ndarray,
    target: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score_fn: Callable[[nn.Module], float],
    *,
    epochs: int,
    seed: int,
    lr: float,
    batch: int,
    weight_decay: float,
    threads: int,
    progress: bool,
    name: str,
) -> TrainResult:
    """AdamW with a one-cycle schedule; the data order is a seeded permutation per epoch."""
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be positive, got {epochs} and {batch}")
    start = time.perf_counter()
    xs, ts = torch.from_numpy(x), torch.from_numpy(target)
    with torch_threads(threads):
        torch.manual_seed(seed)
        model = build()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * -(-len(x) // batch), pct_start=0.15
        )
        order = torch.Generator().manual_seed(seed)
        losses = []
        for epoch in range(epochs):
            model.train()
            total = 0.0
            for idx in torch.randperm(len(x), generator=order).split(batch):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xs[idx]), ts[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            losses.append(total / len(x))
            if progress:
                print(f"{name} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.5f}", file=sys.stderr)
        model.eval()
        score = score_fn(model)
    return TrainResult(model, score, time.perf_counter() - start, losses)


def train_autoencoder(
    epochs: int = 30,
    seed: int = 0,
    progress: bool = False,
    *,
    lr: float = 1e-2,
    batch: int = 16,
    threads: int = THREADS,
    latent: int = 32,
    widths: tuple[int, int] = (16, 32),
) -> TrainResult:
    """Train ``torch_zoo.AutoEncoder(latent, widths)`` on ``digits28("train")`` with MSE.

    ``score`` is the reconstruction PSNR (dB, see ``psnr``) on ``digits28("test")``.
    """
    x, _ = digits28("train")
    x_test, _ = digits28("test")
    return _train(
        lambda: AutoEncoder(latent, tuple(widths)),
        x,
        x,
        F.mse_loss,
        lambda m: psnr(predict(m, x_test), x_test),
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch=batch,
        weight_decay=0.0,
        threads=threads,
        progress=progress,
        name="autoencoder",
    )


def train_classifier(
    epochs: int = 20,
    seed: int = 0,
    progress: bool = False,
    *,
    lr: float = 1e-2,
    batch: int = 32,
    threads: int = THREADS,
) -> TrainResult:
    """Train ``DigitsCNN`` on ``digits28("train")`` with cross-entropy.

    ``score`` is the accuracy on ``digits28("test")``.
    """
    x, y = digits28("train")
    x_test, y_test = digits28("test")
    return _train(
        DigitsCNN,
        x,
        y,
        F.cross_entropy,
        lambda m: accuracy(predict(m, x_test), y_test),
        epochs=epochs,
        seed=seed,
        lr=lr,
        batch=batch,
        weight_decay=1e-4,
        threads=threads,
        progress=progress,
        name="classifier",
    )
