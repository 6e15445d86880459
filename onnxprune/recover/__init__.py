"""Recovery after pruning: refit the remaining weights (layer compensation; knowledge
distillation through a torch interpreter of ONNX graphs)."""
