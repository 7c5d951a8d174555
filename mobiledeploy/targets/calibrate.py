"""`target calibrate`: device measurements -> a fitted target profile, written as TOML.

The fit itself is ``mobiledeploy.cost.model.fit`` and the ``[cost_model]`` table's TOML is
``mobiledeploy.cost.fit``; this module loads the base target, reads the measurements
(``mobiledeploy.cost.measurements``), writes the new profile and checks that it loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mobiledeploy import io
from mobiledeploy.cost.estimate import cost_model_for
from mobiledeploy.cost.fit import cost_model_toml, fit_table, strip_cost_model, toml_value
from mobiledeploy.cost.measurements import read_all, split_spec
from mobiledeploy.cost.model import FitResult, fit
from mobiledeploy.errors import UsageError
from mobiledeploy.targets import load_target


@dataclass(frozen=True)
class CalibrateConfig:
    measurements: str | tuple[str, ...]  # PATH or MODEL=PATH (see mobiledeploy.cost.measurements), one or more
    out: str
    target: str | None = None
    target_file: str | None = None
    params: tuple[str, ...] | None = None
    name: str | None = None  # the new target's name (default: the --out file's stem)


@dataclass(frozen=True)
class CalibrateResult:
    target: str
    out: str
    fit: FitResult

    def to_json(self) -> dict:
        return {"target": self.target, "out": self.out, **self.fit.to_json()}


def calibrate(config: CalibrateConfig) -> CalibrateResult:
    """Fit a target's cost model to device measurements; write a new target TOML."""
    target = load_target(config.target, file=config.target_file)
    out = Path(config.out)
    if out.suffix.lower() != ".toml":
        raise UsageError(f"--out {str(out)!r} must be a .toml file")
    if out.exists() and out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory")
    specs = (config.measurements,) if isinstance(config.measurements, str) else tuple(config.measurements)
    if not specs:
        raise UsageError("no --measurements given")
    rows = read_all(specs, default_threads=target.threads or 1)
    sources = ", ".join(split_spec(spec)[1].name for spec in specs)
    base = cost_model_for(target)
    result = fit(base, rows, params=config.params, loo=True)
    name = config.name or out.stem
    text = strip_cost_model(target.path.read_text(encoding="utf-8"))
    text, n = re.subn(r'(?m)^name\s*=\s*".*"$', f"name = {toml_value(name)}", text, count=1)
    if not n:
        text = f"name = {toml_value(name)}\n" + text
    header = (f"# Calibrated by `mobiledeploy target calibrate` from {target.name!r} with "
              f"{sources}.\n")
    table = fit_table(result, source=f"{sources} (base target {target.name})")
    comment = (f"fitted on {len(rows)} measurement(s), parameters {', '.join(result.params)}: "
               f"median |error| {result.median_abs_error_pct:.1f}%, worst {result.worst_abs_error_pct:.1f}% "
               f"(in-sample)")
    if result.loo_errors_pct:
        held_out = (f"{result.loo_folds}-fold (each row predicted by the fit on the rows outside its fold)"
                    if result.loo_folds else "leave-one-out (each row predicted by the fit on the others)")
        comment += (f"\n{held_out}: median |error| "
                    f"{result.loo_median_abs_error_pct:.1f}%, worst {result.loo_worst_abs_error_pct:.1f}%")
    with io.atomic_path(out) as tmp:
        tmp.write_text(header + text + cost_model_toml(table, comment=comment), encoding="utf-8")
        load_target(file=tmp)  # what we write must load as a target (else nothing is written)
    return CalibrateResult(target=target.name, out=str(out), fit=result)
