"""Data sets shared by calibration (export), training and evaluation: loaders and labels."""
