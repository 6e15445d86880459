"""Make the decoder-with-cache test files in tests/data/optimum/ with Optimum's exporter.

Random-init Llama (grouped-query attention) and GPT-2 checkpoints from small configs are saved
locally (``save_pretrained``; nothing is downloaded) and exported by ``optimum-cli export onnx
--task text-generation-with-past``, as users export decoders with a key/value cache. Optimum's
exporter needs transformers < 4.58, so this runs in a venv of its own::

    python -m venv /tmp/optimum && /tmp/optimum/bin/pip install torch==2.13.0 \\
        "transformers<4.58" "optimum-onnx[onnxruntime]"
    /tmp/optimum/bin/python scripts/make_optimum_kv.py tests/data/optimum
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                   num_hidden_layers=2, intermediate_size=64, max_position_embeddings=128)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel",
             dict(vocab_size=64, n_embd=32, n_head=4, n_layer=2, n_inner=64, n_positions=128,
                  bos_token_id=0, eos_token_id=0)),
}


def main(out: Path) -> None:
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).with_name("optimum-cli")
    for name, (config, model, kwargs) in CONFIGS.items():
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt, onnx_dir = Path(tmp, "ckpt"), Path(tmp, "onnx")
            getattr(transformers, model)(getattr(transformers, config)(**kwargs)).save_pretrained(
                ckpt)
            subprocess.run([str(cli), "export", "onnx", "--model", str(ckpt), "--task",
                            "text-generation-with-past", str(onnx_dir)], check=True)
            shutil.copy(onnx_dir / "model.onnx", out / f"{name}_kv.onnx")
        print("wrote", out / f"{name}_kv.onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/optimum"))
