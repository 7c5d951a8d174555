"""Accuracy: data sets, training, evaluation, metrics and per-layer quantization error."""
