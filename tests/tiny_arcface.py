"""A tiny random-weight ONNX model in insightface's ArcFace layout (w600k_r50.onnx / glintr100.onnx):
one input N x 3 x 112 x 112 (RGB, (x - 127.5) / 127.5), one output N x 512. Conv -> ReLU -> Gemm,
so its output depends on the pixels' values, position and channel order."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_arcface(path: Path, seed: int = 0, batch="N", size: int = 112, dim: int = 512) -> Path:
    """Save the model to path; batch: "N" (any batch, as insightface's files) or a fixed int."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = 8
    conv_w = rng.normal(0, 0.2, (16, 3, k, k)).astype(np.float32)
    conv_b = rng.normal(0, 0.3, (16,)).astype(np.float32)
    feat = 16 * (size // k) ** 2
    gemm_w = rng.normal(0, 1 / np.sqrt(feat), (feat, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "gemm_w"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, dim])],
        [numpy_helper.from_array(conv_w, "conv_w"), numpy_helper.from_array(conv_b, "conv_b"),
         numpy_helper.from_array(gemm_w, "gemm_w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
