"""Quantized models: static int8 quantization with onnxruntime's tools (``static``)."""

from .static import QuantSettings, quantize_int8

__all__ = ["QuantSettings", "quantize_int8"]
