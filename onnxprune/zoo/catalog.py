"""Example models and data a user can write to files (``onnxprune zoo`` / ``onnxprune data``):
what the README's examples run on. Nothing is downloaded: models are built in code (with
deterministic weights, optionally trained on data a package ships) and data comes from
scikit-learn's digits."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from ..errors import UsageError
from ..ir import io


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    needs: str  # the extra it needs ("core": none; "examples": torch, gymnasium, scikit-learn)
    trainable: str | None  # what --train does, or None
    export: Callable[[str, int, bool, int | None], None]  # (path, seed, train, epochs)


def _demo(path: str, seed: int, train: bool, epochs: int | None) -> None:
    from .builder import demo_cnn

    onnx.save(demo_cnn(seed), path)


def _text(path: str, seed: int, train: bool, epochs: int | None) -> None:
    from .builder import demo_text

    onnx.save(demo_text(seed), path)


def _torch_model(name: str) -> Callable[[str, int, bool, int | None], None]:
    def export(path: str, seed: int, train: bool, epochs: int | None) -> None:
        from .torch_zoo import ZOO, export_onnx
        from .torch_zoo import build as build_model

        if name == "autoencoder" and train:
            from .train import train_autoencoder

            module = train_autoencoder(epochs=epochs or 10, seed=seed).model
        else:
            module = build_model(name, seed)
        export_onnx(module, path, ZOO[name][1], dynamic_batch=True)

    return export


def _classifier(path: str, seed: int, train: bool, epochs: int | None) -> None:
    import torch

    from .torch_zoo import export_onnx
    from .train import DigitsCNN, train_classifier

    if train:
        module = train_classifier(epochs=epochs or 10, seed=seed).model
    else:
        torch.manual_seed(seed)
        module = DigitsCNN()
    export_onnx(module, path, (1, 28, 28), dynamic_batch=True)


def _agent(path: str, seed: int, train: bool, epochs: int | None) -> None:
    import torch

    from .control import Agent, export_agent

    if train:
        from .control_train import train_agent

        agent = train_agent(seconds=float(epochs or 120), seed=seed)
    else:
        torch.manual_seed(seed)
        agent = Agent()
    export_agent(agent, path)


_TORCH = {
    "mlp": "an MLP on 64 features", "lenet": "LeNet-5 on 1x28x28",
    "vgg": "a small VGG on 3x32x32", "resnet_basic": "a small ResNet (basic blocks), 3x32x32",
    "resnet_bottleneck": "a small ResNet (bottlenecks), 3x32x32",
    "resnet50": "ResNet-50 at 3x224x224 (random weights)",
    "mobilenetv2": "MobileNetV2 at 3x224x224", "mobilenetv2_small": "a small MobileNetV2, 3x32x32",
    "densenet121": "DenseNet-121 at 3x224x224", "densenet_small": "a small DenseNet, 3x32x32",
    "unet": "a small U-Net, 3x32x32",
}

ENTRIES: dict[str, Entry] = {
    "demo": Entry("demo", "a small CNN built with onnx.helper (BN, residual, concat, "
                  "depthwise); what 'onnxprune demo' prunes", "core", None, _demo),
    "text": Entry("text", "a small text encoder built with onnx.helper: token ids ('input_ids', "
                  "0 pads) -> a 4000 x 64 embedding table -> two linear layers -> masked mean "
                  "(random weights; for --keep-tokens)", "core", None, _text),
    "autoencoder": Entry("autoencoder", "a conv autoencoder on 1x28x28 digits (input 'input')",
                         "examples", "trains on scikit-learn's digits (--epochs, default 10)",
                         _torch_model("autoencoder")),
    "classifier": Entry("classifier", "a digits CNN classifier on 1x28x28 (input 'input')",
                        "examples", "trains on scikit-learn's digits (--epochs, default 10)",
                        _classifier),
    "agent": Entry("agent", "a Pendulum control agent: encoder, dynamics, reward, pi, q "
                   "(inputs 'obs', 'action')", "examples",
                   "trains in gymnasium's Pendulum (--epochs = seconds, default 120)", _agent),
    **{name: Entry(name, text, "examples", None, _torch_model(name))
       for name, text in _TORCH.items()},
}


def export_model(name: str, path: str | os.PathLike, *, seed: int = 0, train: bool = False,
                 epochs: int | None = None) -> Path:
    """Write zoo model ``name`` to ``path`` (atomically, checked first); returns the path."""
    if name not in ENTRIES:
        raise UsageError(f"unknown zoo model {name!r}; choose from {', '.join(ENTRIES)} "
                         "(see 'onnxprune zoo list')")
    entry = ENTRIES[name]
    if train and entry.trainable is None:
        raise UsageError(f"zoo model {name!r} has no training (--train works for "
                         f"{', '.join(n for n, e in ENTRIES.items() if e.trainable)})")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    out = io.output_target(path)
    try:
        with tempfile.TemporaryDirectory(prefix=".onnxprune-zoo-", dir=out.parent) as tmp:
            staged = os.path.join(tmp, "model.onnx")
            entry.export(staged, seed, train, epochs)
            return io.save_model(onnx.load(staged), out)
    except ImportError as err:
        raise UsageError(f"zoo model {name!r} needs {err.name or 'a package not installed'} "
                         f"(pip install 'onnxprune[{entry.needs}]')") from None


DATASETS = {"digits": "scikit-learn's 8x8 digits upsampled to 1x28x28 in [0, 1], with labels"}


def write_digits(path: str | os.PathLike, *, split: str = "train", count: int | None = None,
                 input_name: str = "input", seed: int = 0, fmt: str = "npz") -> tuple[Path, int]:
    """Calibration data for the digit models: ``{input_name: [N,1,28,28] float32, "labels"}``
    written to ``path`` as an .npz (atomically), or with ``fmt="png"`` as a folder of 8-bit
    grey PNGs, one sub-folder per class (``path/3/00017.png``: what ``--calib FOLDER``
    reads back, labels included); returns the path and N."""
    try:
        from .digits import digits28
        x, y = digits28(split, seed=seed)
    except ImportError:
        raise UsageError("the digits data needs scikit-learn (pip install "
                         "'onnxprune[examples]')") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    if count is not None:
        if count < 1:
            raise UsageError(f"--count must be >= 1, got {count}")
        x, y = x[:count], y[:count]
    if fmt == "png":
        return _png_folder(Path(path), x, y), len(x)
    out = io.output_target(path)
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", suffix=".npz", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{input_name: x, "labels": y})
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as open() would create it (mkstemp makes 0600)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out, len(x)


def _png_folder(out: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """``x`` ([N, 1, H, W] in [0, 1]) as PNGs under ``out/<label>/``, written in a temporary
    folder beside it and renamed into place; an existing non-empty ``out`` is refused."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("writing PNGs needs Pillow: pip install 'onnxprune[data]'") from None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: exists (give a new or empty folder)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder")
    tmp = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=out.parent))
    try:
        pixels = np.clip(np.rint(np.asarray(x)[:, 0] * 255), 0, 255).astype(np.uint8)
        for i, (px, label) in enumerate(zip(pixels, np.asarray(y), strict=True)):
            folder = tmp / str(int(label))
            folder.mkdir(exist_ok=True)
            Image.fromarray(px, mode="L").save(folder / f"{i:05d}.png")
        mask = os.umask(0)
        os.umask(mask)
        for p in [tmp, *tmp.iterdir()]:
            p.chmod(0o777 & ~mask)
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
