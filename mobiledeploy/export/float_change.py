"""``export --equalize``: what cross-layer equalization did to the float model, measured and stated.

int8 artifacts are converted from the equalized model (``recipes.Calibration.equalized``);
every artifact is still validated against the original. ``cle`` scales only chains that end
in ReLU, which is positively homogeneous: the float function is kept (up to float32
rounding). ``cle-relu`` first replaces ReLU6 by ReLU in every chain it equalizes (Nagel et
al., 2019, do so for MobileNet V2): wherever a channel passed 6 the float function changes.
``equalization_record`` compares the equalized float model with the original on the
validation samples (top-1 agreement, max |difference| of what artifacts are compared on,
SQNR) against the fp32 tolerance, for the manifest's ``quantization.equalize``, and returns
the one-line warning to give when the float function moved beyond that tolerance.
TensorFlow/Keras are imported by the callees only.
"""

from __future__ import annotations

import numpy as np

from mobiledeploy.export.equalize import cle_chains, relu_like
from mobiledeploy.export.logits import keras_logits_model, keras_outputs
from mobiledeploy.export.validate import tolerance
from mobiledeploy.metrics import sqnr_db, top1_agreement


def equalization_record(model, equalized, method: str, x: np.ndarray, reference, *, atol: float,
                        rtol: float) -> tuple[dict, str | None]:
    """(the manifest's record, a warning or None) for ``equalized`` = ``model`` under ``--equalize method``;
    ``reference`` is the export's ``validate.Reference`` of ``model`` on ``x``."""
    relu6 = "relu" if method == "cle-relu" else "skip"
    chains = cle_chains(model, relu6=relu6)
    record = {"chains_equalized": len(chains),
              "chains": [f"{dw.name} -> {pw.name}" for dw, _, _, pw in chains],
              "relu6_replaced": sum(relu_like(act) == "relu6" for _, _, act, _ in chains)}
    skipped = len(cle_chains(model, relu6="relu")) - len(chains)
    if skipped:
        record["chains_left_alone"] = skipped  # they end in ReLU6 and cle keeps the caps
    if equalized is model:
        why = (f"the {skipped} depthwise -> 1x1 chains end in ReLU6 (--equalize cle-relu replaces it by ReLU)"
               if skipped else "the model has no depthwise -> batch-norm -> ReLU -> 1x1 chain")
        record["float_change"] = {"samples": int(len(x)), "changed": False, "note": "nothing equalized"}
        return record, f"--equalize {method}: nothing to equalize: {why}; int8 is converted as without it"
    twin = keras_logits_model(equalized)
    got = keras_outputs(twin if reference.logits is not None and twin is not None else equalized, x)
    want = reference.values
    got = got.reshape(want.shape)
    diff = float(np.abs(got - want).max()) if want.size else 0.0
    tol = tolerance("fp32", want, atol, rtol)
    agree = top1_agreement(want, got)
    record["float_change"] = {
        "samples": int(len(x)), "compared": reference.compared, "top1_agreement": agree, "max_abs_diff": diff,
        "sqnr_db": _finite(sqnr_db(want, got)), "fp32_tolerance": tol, "changed": bool(diff > tol),
        "against": "the original float model on the validation samples"}
    if diff <= tol:
        return record, None
    return record, (f"--equalize {method} changed the float model: its {reference.compared} differ from the "
                    f"original's by up to {diff:.3g} (fp32 tolerance {tol:.2g}), top-1 agreement {agree:.1%} on "
                    f"{len(x)} validation samples ({record['relu6_replaced']} ReLU6 replaced by ReLU); the int8 "
                    "artifacts are converted from the changed model")


def _finite(v: float) -> float | None:
    """JSON has no infinity: None when the outputs are identical."""
    return v if np.isfinite(v) else None
