"""Build ONNX graphs directly with onnx.helper and numpy weights (no framework needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Append nodes one call at a time; every call returns its output tensor name."""

    def __init__(self, seed: int = 0, opset: int = 17):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, values: np.ndarray, hint: str = "c") -> str:
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def weight(self, *shape: int, hint: str = "w", scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const((self.rng.standard_normal(shape) * s).astype(np.float32), hint)

    def input(self, name: str, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def op(self, op: str, inputs: Sequence[str], n_out: int = 1, name: str | None = None,
           **attrs) -> str | list[str]:
        name = name or self._name(op)
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    # -- layers ---------------------------------------------------------------------------
    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1,
             bias: bool = True, name: str | None = None) -> str:
        w = self.weight(cout, cin // group, k, k, hint="conv_w")
        ins = [x, w] + ([self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1,
                                    "conv_b")] if bias else [])
        return self.op("Conv", ins, name=name, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[k // 2] * 4, group=group)

    def conv_transpose(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 2,
                       group: int = 1, name: str | None = None) -> str:
        w = self.weight(cin, cout // group, k, k, hint="convt_w")
        b = self.const(self.rng.standard_normal(cout).astype(np.float32) * 0.1, "convt_b")
        return self.op("ConvTranspose", [x, w, b], name=name, kernel_shape=[k, k],
                       strides=[stride, stride], pads=[k // 2] * 4,
                       output_padding=[stride - 1] * 2, group=group)

    def batchnorm(self, x: str, c: int, name: str | None = None) -> str:
        r = self.rng
        params = [
            (r.uniform(0.5, 1.5, c)).astype(np.float32), (r.standard_normal(c) * 0.1).astype(np.float32),
            (r.standard_normal(c) * 0.1).astype(np.float32), r.uniform(0.5, 1.5, c).astype(np.float32),
        ]
        return self.op("BatchNormalization", [x] + [self.const(p, "bn") for p in params],
                       name=name, epsilon=1e-5)

    def gemm(self, x: str, fin: int, fout: int, trans_b: bool = True, name: str | None = None) -> str:
        w = self.weight(fout, fin, hint="fc_w") if trans_b else self.const(
            (self.rng.standard_normal((fin, fout)) / np.sqrt(fin)).astype(np.float32), "fc_w")
        b = self.const((self.rng.standard_normal(fout) * 0.1).astype(np.float32), "fc_b")
        return self.op("Gemm", [x, w, b], name=name, transB=int(trans_b))

    def matmul(self, x: str, fin: int, fout: int, name: str | None = None) -> str:
        w = self.const((self.rng.standard_normal((fin, fout)) / np.sqrt(fin)).astype(np.float32), "mm_w")
        return self.op("MatMul", [x, w], name=name)

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        return self.op("Reshape", [x, self.const(np.array(shape, dtype=np.int64), "shape")])

    def build(self, outputs: Sequence[str | tuple[str, Sequence]], name: str = "graph"
              ) -> onnx.ModelProto:
        """``outputs``: names, or (name, shape) where shape inference cannot tell."""
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) if isinstance(o, str)
                else helper.make_tensor_value_info(o[0], TensorProto.FLOAT, list(o[1]))
                for o in outputs]
        graph = helper.make_graph(self.nodes, name, self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model)
        onnx.checker.check_model(model, full_check=True)
        return model


def demo_cnn(seed: int = 0) -> onnx.ModelProto:
    """A small CNN with the structures pruning must get right: BN, a residual add, a
    concat of two branches, a depthwise conv, flatten and two linear layers."""
    b = GraphBuilder(seed)
    x = b.input("image", ["batch", 3, 32, 32])
    h = b.relu(b.batchnorm(b.conv(x, 3, 32, name="stem"), 32))
    r = b.relu(b.batchnorm(b.conv(h, 32, 32, name="block1_conv1"), 32))
    r = b.batchnorm(b.conv(r, 32, 32, name="block1_conv2"), 32)
    h = b.relu(b.op("Add", [h, r], name="block1_add"))
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    left = b.relu(b.conv(h, 32, 24, k=1, name="branch_a"))
    right = b.relu(b.conv(b.conv(h, 32, 32, group=32, name="branch_b_dw"), 32, 40, k=1,
                          name="branch_b_pw"))
    h = b.op("Concat", [left, right], axis=1, name="merge")
    h = b.relu(b.conv(h, 64, 64, stride=2, name="head_conv"))
    h = b.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Flatten", [h], axis=1)
    h = b.relu(b.gemm(h, 64 * 4 * 4, 128, name="fc1"))
    y = b.gemm(h, 128, 10, name="classifier")
    return b.build([y], "demo_cnn")


def demo_text(seed: int = 0, vocab: int = 4000, dim: int = 64) -> onnx.ModelProto:
    """A small text encoder: token ids (0 is padding) -> a vocab x dim embedding table -> two
    linear layers -> the mean over the tokens that are not padding (read from the ids, as BERT
    exports compute their mask). The table is most of its parameters (--keep-tokens)."""
    b = GraphBuilder(seed)
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                                  ["batch", "seq"]))
    h = b.op("Gather", [b.weight(vocab, dim, hint="word_embeddings", scale=1.0), "input_ids"],
             axis=0)
    h = b.op("Relu", [b.matmul(h, dim, 2 * dim, name="fc1")])
    h = b.matmul(h, 2 * dim, dim, name="fc2")
    mask = b.op("Cast", [b.op("Greater", ["input_ids", b.const(np.array(0, np.int64))])],
                to=TensorProto.FLOAT)
    mask = b.op("Unsqueeze", [mask, b.const(np.array([-1], np.int64))])
    axis = b.const(np.array([1], np.int64))
    total = b.op("ReduceSum", [b.op("Mul", [h, mask]), axis], keepdims=0)
    count = b.op("ReduceSum", [mask, axis], keepdims=0)
    y = b.op("Div", [total, b.op("Max", [count, b.const(np.float32(1.0))])])
    return b.build([y], "demo_text")
