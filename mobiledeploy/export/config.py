"""``ExportConfig``: what ``export_model`` does, one field per ``export`` option, and every cheap
check of it (``check``), run before TensorFlow is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mobiledeploy.errors import UsageError
from mobiledeploy.export.float_layers import parse_spec as parse_float_layers
from mobiledeploy.export.formats import DEFAULT_FORMATS, DEFAULT_PRECISIONS, FORMATS, PRECISIONS
from mobiledeploy.export.recipes import ONNX_QUANT_TYPES
from mobiledeploy.export.validate import DEFAULT_ATOL, DEFAULT_MIN_AGREEMENT, DEFAULT_RTOL, FP16_FACTOR
from mobiledeploy.models import archs
from mobiledeploy.models.limits import check_fits
from mobiledeploy.models.preprocessing import get_preprocessing
from mobiledeploy.options import AtLeast, Finite, Names, OneOf, check_fields, option
from mobiledeploy.options import estimate_method as estimate_method_option, judge_on_emulated_cpu
from mobiledeploy.options import equalize as equalize_option, tflite_calibration as tflite_calibration_option
from mobiledeploy.options import onnx_calibration as onnx_calibration_option, weight_rounding as weight_rounding_option
from mobiledeploy.targets import load_target

@dataclass(frozen=True)
class ExportConfig:
    """What ``export_model`` does. Each field is also its ``export`` option (``mobiledeploy.options``)."""

    # model source: build (arch ...) or load (model_path)
    arch: str = option("mobilenet_v1", metavar="NAME",
                       help="mobilenet_v1, mobilenet_v2, mobilenet_v3_small or mobilenet_v3_large.")
    alpha: float = option(1.0, help="Width multiplier (> 0).")
    resolution: int = option(224, flag="--res", help="Input resolution (>= 32).")
    classes: int = option(1000, help="Number of output classes.")
    depth_multiplier: int = option(1, help="Depth multiplier (mobilenet_v1).")
    dropout: float = option(1e-3, help="Dropout before the classifier.")
    weights: str | None = option(None, path="any",
                                 help="'imagenet' (Keras' official file from $KERAS_HOME/models, never downloaded) "
                                      "or a local Keras weights file (.h5, .weights.h5); default random init.")
    seed: int = option(0, help="Seed for random init and data sampling.")
    model_path: str | None = option(None, flag="--model", path="any",
                                    help="Load this model (.keras, .h5 or a SavedModel directory) instead of "
                                         "building one.")
    unsafe_load: bool = option(False, help="Allow models that need unsafe deserialization (Lambda layers). Only "
                                           "for files you trust.")
    # what to produce
    formats: tuple[str, ...] = option(DEFAULT_FORMATS, check=Names(FORMATS),
                                      help=f"Comma list of formats: {', '.join(FORMATS)} (keras saves the source "
                                           "model).")
    precisions: tuple[str, ...] = option(DEFAULT_PRECISIONS, flag="--quant", check=Names(PRECISIONS),
                                         help=f"Comma list of precisions: {', '.join(PRECISIONS)}.")
    int8_io: bool = option(False, help="int8 TFLite with int8 input and output tensors.")
    onnx_quant_types: str | None = option(  # None: chosen for this host
        None, check=OneOf(ONNX_QUANT_TYPES, "ONNX quantization types"),
        help="ONNX int8 activation/weight types (default: chosen for this CPU, see docs/export.md).")
    per_channel: bool = option(True, flag="--per-tensor", flag_value=False,
                               help="int8 weights with one scale per tensor instead of per output channel (for "
                                    "comparison).")
    onnx_calibration: str = onnx_calibration_option()
    bias_correction: bool | None = option(None, flag="--bias-correction/--no-bias-correction",
                                          help="Correct the mean shift int8 weight rounding causes, per channel, on "
                                               "the calibration data (default: on for trained weights, off for "
                                               "random init).")
    float_layers: tuple[str, ...] | None = option(
        None, cli_default="auto", parse=parse_float_layers, metavar="auto|none|NAMES", show_default=True,
        help="Keras convolution layers kept in float inside int8 artifacts: auto (the first 3 for trained weights, "
             "none for random init), none, or a comma list of layer names.")
    weight_rounding: str = weight_rounding_option()
    equalize: str = equalize_option()
    tflite_calibration: str = tflite_calibration_option()
    # data
    calib: str | None = option(None, metavar="SOURCE",  # None: calibration.choose_source (never digits for ImageNet)
                               help="Calibration data: digits, random, an image folder or a .npz with an 'x' "
                                    "array. Default: digits; for trained ImageNet weights the photos of `make "
                                    "assets` (never digits).")
    calib_samples: int = option(200, check=AtLeast(1), help="Number of calibration samples.")
    preprocessing: str | None = option(None, metavar="NAME",
                                       help="Input preprocessing (mobilenet, raw, unit); default: the "
                                            "architecture's.")
    validate_samples: int = option(32, check=AtLeast(1), help="Held-out samples each artifact is validated on.")
    # checks and output
    atol: float = option(DEFAULT_ATOL, check=Finite(low=0.0),
                         help=f"Absolute part of the fp32 tolerance (fp16: x{FP16_FACTOR:g}); see --rtol.")
    rtol: float = option(DEFAULT_RTOL, check=Finite(low=0.0),
                         help=f"fp32 tolerance relative to the largest |reference| logit (fp16: x{FP16_FACTOR:g}).")
    strict: bool = option(True, flag="--strict/--no-strict",
                          help="Fail the export when a float artifact is outside its tolerance.")
    min_agreement: float | None = option(
        None, type=float, check=Finite(low=0.0, high=1.0), metavar="FRACTION",
        help=f"Fail the export (nothing written) when a dynamic or int8 artifact's top-1 agreement with the float "
             f"model on the validation samples is below this. Default: below {DEFAULT_MIN_AGREEMENT:g} (trained "
             "weights) the artifact is kept, marked degraded and warned about.")
    target: str | None = option(
        None, metavar="NAME",
        help="With --min-agreement and --quant int8: an accuracy budget. Search for the int8 artifact (layers kept "
             "in float) that meets --min-agreement at the lowest device estimate on this target (see "
             "`mobiledeploy targets`).")
    estimate_method: str = estimate_method_option("--estimate-method")  # how the accuracy budget prices candidates
    emulate: str | None = judge_on_emulated_cpu()  # quantized artifacts judged under qemu (export.emulated)
    out: str = option("build", path="dir", help="Output directory.")

    def check(self) -> None:
        """Every cheap check, before TensorFlow is imported. Raises UsageError."""
        check_fields(self)  # the declared checks: names, choices, ranges
        if not any(p in FORMATS[f].precisions for f in self.formats
                   for p in (self.precisions if FORMATS[f].per_precision else ("fp32",))):
            raise UsageError(f"nothing to export: {', '.join(self.formats)} cannot produce "
                             f"{', '.join(self.precisions)} (--formats / --quant)")
        if self.model_path is not None:
            archs.check_model_path(self.model_path)
        else:
            archs.check_build_args(self.arch, alpha=self.alpha, resolution=self.resolution, classes=self.classes,
                                   depth_multiplier=self.depth_multiplier, dropout=self.dropout,
                                   weights=self.weights)
        if self.weight_rounding == "adaround" and not self.per_channel:
            raise UsageError("--weight-rounding adaround needs per-channel weights (drop --per-tensor)")
        if self.target is not None:
            _check_budget(self)
        elif self.estimate_method != "cost":
            raise UsageError("--estimate-method prices the accuracy budget's candidates: give --target and "
                             "--min-agreement too")
        if self.emulate is not None:  # a bad CPU name or no ARM environment: one line, before any conversion
            from mobiledeploy.export.emulated import check_cpu

            check_cpu(self.emulate)
        if self.preprocessing is not None:
            get_preprocessing(self.preprocessing)
        if self.model_path is None:  # the calibration images too must fit beside the model

            check_fits(self.arch, alpha=self.alpha, resolution=self.resolution, classes=self.classes,
                       depth_multiplier=self.depth_multiplier, samples=self.calib_samples + self.validate_samples)
        if self.calib not in (None, "digits", "random") and not Path(self.calib).expanduser().exists():
            raise UsageError(f"calibration data not found (--calib): {self.calib!r}; expected 'digits', "
                             "'random', a folder of images or a .npz file")


def _check_budget(config: ExportConfig) -> None:
    """--target asks for the accuracy budget: it needs --min-agreement, int8 and the float layers free."""
    if config.min_agreement is None:
        raise UsageError("--target sets the accuracy budget's target: give --min-agreement A too")
    if "int8" not in config.precisions or not any(FORMATS[f].per_precision and "int8" in FORMATS[f].precisions
                                                  for f in config.formats):
        raise UsageError("the accuracy budget (--min-agreement with --target) searches int8 artifacts: add int8 to "
                         "--quant and tflite or onnx to --formats")
    if config.float_layers is not None:
        raise UsageError("the accuracy budget (--target) chooses the layers kept in float: leave --float-layers "
                         "at auto")

    target = load_target(config.target)
    if config.estimate_method == "kernels":  # LLVM, the ARM environment, the target's core: before any conversion
        from mobiledeploy.kernels.estimate import preflight_target

        preflight_target(target)
