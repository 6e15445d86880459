"""The model zoo: small and reference-size networks (architectures in ``torch_models``) with
deterministic weights, and their export to ONNX with either torch exporter."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .torch_models import (
    MLP,
    AutoEncoder,
    DenseNet121,
    DenseNetSmall,
    LeNet,
    MobileNetV2,
    MobileNetV2Small,
    ResNet50,
    ResNetBasic,
    ResNetBottleneck,
    UNetSmall,
    VGGSmall,
)

__all__ = [
    "ZOO",
    "MLP",
    "LeNet",
    "VGGSmall",
    "ResNetBasic",
    "ResNetBottleneck",
    "ResNet50",
    "MobileNetV2",
    "MobileNetV2Small",
    "DenseNet121",
    "DenseNetSmall",
    "UNetSmall",
    "AutoEncoder",
    "build",
    "export_onnx",
    "export_zoo_model",
]


ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (MLP, (64,)),
    "lenet": (LeNet, (1, 28, 28)),
    "vgg": (VGGSmall, (3, 32, 32)),
    "resnet_basic": (ResNetBasic, (3, 32, 32)),
    "resnet_bottleneck": (ResNetBottleneck, (3, 32, 32)),
    "resnet50": (ResNet50, (3, 224, 224)),
    "mobilenetv2": (MobileNetV2, (3, 224, 224)),
    "mobilenetv2_small": (MobileNetV2Small, (3, 32, 32)),
    "densenet121": (DenseNet121, (3, 224, 224)),
    "densenet_small": (DenseNetSmall, (3, 32, 32)),
    "unet": (UNetSmall, (3, 32, 32)),
    "autoencoder": (AutoEncoder, (1, 28, 28)),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """Construct zoo model ``name`` with deterministic weights, in eval mode."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(ZOO)}")
    torch.manual_seed(seed)
    model = ZOO[name][0]()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model.eval()


@contextlib.contextmanager
def quiet():
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int],
    *,
    batch: int = 1,
    dynamo: bool = False,
    opset: int = 17,
    dynamic_batch: bool = False,
    fold_bn: bool = True,
) -> str:
    """Export ``module`` (kept in eval mode) to ONNX at ``path``; returns the path.

    ``input_shape`` excludes the batch dimension. ``fold_bn=False`` keeps BatchNormalization
    nodes instead of fusing them into the preceding convs (TorchScript: no eval peephole or
    constant folding; dynamo: constant folding only, without the onnxscript rewrite rules).
    """
    path = os.fspath(path)
    module.eval()
    x = torch.randn(batch, *input_shape)
    names = {"input_names": ["input"], "output_names": ["output"]}
    with quiet(), torch.no_grad():
        if dynamo:
            import onnxscript.optimizer

            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                opset_version=opset,
                optimize=fold_bn,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
                **names,
            )
            if not fold_bn:
                onnxscript.optimizer.fold_constants(program.model)
                onnxscript.optimizer.remove_unused_nodes(program.model)
            program.save(path, external_data=False)
        else:
            torch.onnx.export(
                module,
                (x,),
                path,
                dynamo=False,
                opset_version=opset,
                do_constant_folding=fold_bn,
                training=torch.onnx.TrainingMode.EVAL
                if fold_bn
                else torch.onnx.TrainingMode.PRESERVE,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}
                if dynamic_batch
                else None,
                **names,
            )
    return path


def export_zoo_model(name: str, path: str | os.PathLike, *, seed: int = 0, **kw) -> str:
    """Build zoo model ``name`` and export it with its example input shape."""
    return export_onnx(build(name, seed), path, ZOO[name][1], **kw)
