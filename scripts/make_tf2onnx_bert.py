"""Make tests/data/tf2onnx/bert_tf.onnx: a small BERT-style Keras encoder (token and position
embeddings, two post-norm layers of MultiHeadAttention and a GELU FFN, a classifier on the first
token), random init from a fixed seed, exported by tf2onnx as Keras users export. tf2onnx spells
the layer norm's moments with GlobalAveragePool and ``x * s + (beta - mean * s)``, flattens
``[N, T, C]`` to ``[N*T, C]`` before each Gemm, and decomposes the attention's einsums into
reshapes whose targets are computed from shapes (ReduceProd of gathered sizes). TensorFlow is
not in any extra (it is large), so this runs in a venv of its own::

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1
    /tmp/tf/bin/python scripts/make_tf2onnx_bert.py tests/data/tf2onnx
"""

import sys
from pathlib import Path

import tensorflow as tf
import tf2onnx
from tensorflow import keras

T, C, FFN, VOCAB, HEADS, LAYERS, CLASSES = 8, 32, 64, 100, 4, 2, 3


def encoder() -> keras.Model:
    keras.utils.set_random_seed(0)
    ids = keras.Input((T,), dtype="int32", name="input_ids")
    x = keras.layers.Embedding(VOCAB, C)(ids) + keras.layers.Embedding(T, C)(tf.range(T))
    x = keras.layers.LayerNormalization(epsilon=1e-12)(x)
    for _ in range(LAYERS):
        a = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=C // HEADS)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + a)
        f = keras.layers.Dense(C)(keras.layers.Dense(FFN, activation="gelu")(x))
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + f)
    return keras.Model(ids, keras.layers.Dense(CLASSES)(x[:, 0]))


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    spec = (tf.TensorSpec((None, T), tf.int32, name="input_ids"),)
    tf2onnx.convert.from_keras(encoder(), input_signature=spec, opset=13,
                               output_path=str(out / "bert_tf.onnx"))


if __name__ == "__main__":
    main(sys.argv[1])
