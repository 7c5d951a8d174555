"""Accuracy: evaluation of models on a data set, host-emulated evaluation, training."""
