"""The IR and its runtime: onnx-graphsurgeon helpers, loading and writing models, onnxruntime
sessions and feeds, calibration arrays."""
