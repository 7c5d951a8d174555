"""Trace and freeze a Keras model once; every converter starts from that frozen graph.

Keras 3's ``TFLiteConverter.from_keras_model`` exports a SavedModel to a temporary
directory on every call, and ``tf2onnx.convert.from_keras`` traces and freezes again;
tracing once (dynamic batch) and freezing once saves several seconds per export.
"""

from __future__ import annotations

import weakref

from mobiledeploy.quiet import import_tensorflow

INPUT_NAME = "input"
OUTPUT_NAME = "output"

_FROZEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def frozen_function(model):
    """A concrete function of ``model`` (inference mode, input (None, H, W, C)) with
    its variables folded into constants. Cached per model object."""
    cf = _FROZEN.get(model)
    if cf is None:
        tf = import_tensorflow()
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        shape = (None,) + tuple(model.inputs[0].shape[1:])
        fn = tf.function(lambda x: model(x, training=False))
        cf = convert_variables_to_constants_v2(
            fn.get_concrete_function(tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)))
        _FROZEN[model] = cf
    return cf
