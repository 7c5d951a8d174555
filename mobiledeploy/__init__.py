"""mobiledeploy: take an image model from Keras to a phone and prove what it costs.

Importing this package is cheap: TensorFlow, tf2onnx and the runtimes are imported
inside the functions that need them, never here.
"""

__version__ = "0.1.0"
