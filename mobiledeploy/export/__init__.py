"""Export: the pipeline from a Keras model to validated TFLite/ONNX artifacts."""
