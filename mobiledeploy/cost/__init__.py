"""Cost: one layer IR, readers for Keras/TFLite/ONNX, info, device estimates and their fit."""
