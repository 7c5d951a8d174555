"""Phone latency from the emulated kernels, with nothing fitted, against every LiteRT + XNNPACK table.

    python -m benchmarks run estimate_kernels [--threads 1|multi|all] [--tables SUBSTRING]

For each table of ``benchmarks/data/published_latency.toml`` measured with LiteRT + XNNPACK
(the XNNPACK README's: V1, V2, V3 Large and Small at 1.0/224, fp32, 1, 2 and 4 threads,
Pixel 1, 2 and 3a), every row is estimated by ``mobiledeploy.kernels`` (``estimate
--method kernels``) on the phone's core as stated in ``CORES`` below, chosen from public
facts about the core before any row was scored: zero measurements, nothing tuned. Beside
it, on the same rows, the cost model with priors only and the two-corner calibration of
``benchmarks/estimate_generalize.py`` (its functions, unchanged).

Where the error comes from, per row: the compute and memory terms, the estimate without
the memory term, the busiest thread's IPC in the model beside the IPC the measured latency
implies for the same instructions, and the same counts scheduled by another llvm-mca model
(``neoverse-n1``, the one full out-of-order Arm big-core model of the family) for the
cores that LLVM 19 schedules with its Cortex-A57 model. With several threads, the latency's
critical path runs through the parallel jobs (per operator, the calling thread's serial work
plus each job's busiest thread); beside it, the busiest thread's total over the invoke (the
critical path the estimate took before the jobs were cut per thread), and how the runtime
split the work. The models are random-weight fp32
exports of this toolkit (``mobiledeploy export``, cached under build/estimate_kernels/);
instruction counts of fp32 kernels do not depend on the weights' values.
"""

from __future__ import annotations

import statistics
import time
import tomllib

from benchmarks.common.kernel_artifacts import artifact
from benchmarks.harness import ROOT

KIND = "study"
DATA = ROOT / "benchmarks" / "data" / "published_latency.toml"
ALT_SCHED = "neoverse-n1"

# The phones' big cores. cpu: the qemu model with the core's ISA (qemu 7.2 has none of these
# cores); midr: what the phone's cpuinfo reports, so XNNPACK picks the kernels it picks on
# that phone; sched: LLVM's -mcpu for the core (LLVM maps it to its closest model); clock:
# the published-table data file's clock_ghz for the device.
CORES = {
    "pixel1": {"cpu": "cortex-a72", "midr": 0x512F2111, "sched": "kryo",
               "note": "Snapdragon 821 Kryo (Qualcomm custom core, ARMv8.0-A): qemu cortex-a72 (ARMv8.0-A, no "
                       "dot-product), Kryo MIDR (part 0x211), LLVM's own kryo model"},
    "pixel2": {"cpu": "cortex-a72", "midr": 0x51AF8001, "sched": "cortex-a73",
               "note": "Snapdragon 835 Kryo 280 Gold (Cortex-A73 derivative, ARMv8.0-A): qemu cortex-a72 (qemu has "
                       "no A73), Kryo 2xx Gold MIDR (part 0x800), llvm-mca -mcpu=cortex-a73 (LLVM 19 schedules it "
                       "with its Cortex-A57 model)"},
    "pixel3": {"cpu": "cortex-a76", "midr": 0x516F802D, "sched": "cortex-a75",
               "note": "Snapdragon 845 Kryo 385 Gold (Cortex-A75 derivative, ARMv8.2-A with dot-product): qemu "
                       "cortex-a76 (qemu has no A75), Kryo 3xx Gold MIDR (part 0x802), llvm-mca -mcpu=cortex-a75 "
                       "(LLVM 19 schedules it with its Cortex-A57 model)"},
    "pixel3a": {"cpu": "cortex-a76", "midr": 0x517F802D, "sched": "cortex-a75",
                "note": "Snapdragon 670 Kryo 360 Gold (Cortex-A75 derivative, ARMv8.2-A with dot-product): qemu "
                        "cortex-a76 (qemu has no A75; same runtime-visible features), Kryo 3xx Gold MIDR (part "
                        "0x802), llvm-mca -mcpu=cortex-a75 (LLVM 19 schedules it with its Cortex-A57 model)"},
}
A57_CLASS = {"cortex-a72", "cortex-a73", "cortex-a75", "cortex-a76", "cortex-a57"}


def add_arguments(ap) -> None:
    ap.add_argument("--threads", choices=("1", "multi", "all"), default="all",
                    help="which tables: 1 thread, several threads, or all")
    ap.add_argument("--tables", default="", help="only tables whose name contains this")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per emulated run, seconds")
    ap.add_argument("--older", action="store_true",
                    help="also the small fp32 single-thread tables measured before XNNPACK (MobileNetV2 and V3 "
                         "papers), reported apart as older_tables, never in the overall figures")


def phone_target(device: str, dev: dict, threads: int):
    from mobiledeploy.targets import Target

    core = CORES[device]
    keys = ("clock_ghz", "fp32_flops_per_cycle", "int8_ops_per_cycle", "mem_bandwidth_gbs", "l2_kb", "l3_kb")
    return Target(name=device, threads=threads, device={k: dev[k] for k in keys if k in dev},
                  kernels={"cpu": core["cpu"], "midr": core["midr"], "sched": core["sched"],
                           "clock_ghz": float(dev["clock_ghz"]), "note": core["note"]})


def summary(errs: list[float]) -> dict:
    a = [abs(e) for e in errs]
    return {"n": len(a), "median_abs_error_pct": round(statistics.median(a), 1) if a else None,
            "worst_abs_error_pct": round(max(a), 1) if a else None,
            "mean_signed_error_pct": round(statistics.mean(errs), 1) if errs else None}


def row(model: str, measured: float, table: dict, dev: dict, timeout: float) -> dict:
    from mobiledeploy.errors import MobiledeployError
    from mobiledeploy.kernels import estimate as ke
    from mobiledeploy.runtimes import emulate as emu

    threads = int(table["threads"])
    target = phone_target(table["device"], dev, threads)
    t0 = time.monotonic()
    try:
        e = ke.estimate_kernels(artifact(model), target, threads=threads, timeout_s=timeout)
    except MobiledeployError as err:
        return {"model": model, "measured_ms": measured, "error": str(err)}
    out = {"model": model, "measured_ms": measured, "estimate_ms": round(e.latency_ms, 2),
           "error_pct": round(100 * (e.latency_ms - measured) / measured, 1),
           "compute_ms": round(e.compute_ms, 2), "memory_ms": round(e.memory_ms, 2),
           "compute_only_error_pct": round(100 * (e.compute_ms - measured) / measured, 1),
           "instructions_m": round(e.instructions / 1e6, 2), "cycles_m": round(e.cycles / 1e6, 2),
           "ipc": round(e.ipc, 2), "mix": {k: round(v, 3) for k, v in e.mix.items()},
           "per_thread": e.per_thread, "cached": e.cached, "seconds": round(time.monotonic() - t0, 1)}
    clock = target.kernels["clock_ghz"]
    if threads > 1:  # the critical path through the jobs beside the busiest thread's total
        busiest_ms = e.busiest_thread_cycles / (clock * 1e6) + e.memory_ms
        out |= {"critical_path": "per operator" if e.work_split else "busiest thread total",
                "cycles_busiest_thread_m": round(e.busiest_thread_cycles / 1e6, 2),
                "estimate_busiest_thread_ms": round(busiest_ms, 2),
                "error_pct_busiest_thread": round(100 * (busiest_ms - measured) / measured, 1),
                "work_split": e.work_split, "notes": [n for n in e.notes if n.startswith(("work split", "per operator"))]}
    # the IPC the phone must have reached on the busiest thread's instructions, beside the model's
    busy = max(e.per_thread.values(), key=lambda t: t["cycles"])
    out["ipc_model_busiest_thread"] = round(busy["instructions"] / busy["cycles"], 2)
    out["ipc_implied_by_measured"] = round(busy["instructions"] / (max(measured - e.memory_ms, 1e-9) * clock * 1e6), 2)
    if target.kernels["sched"] in A57_CLASS:  # the same counts on another model: how much the model matters
        env = emu.find_env()
        prof = ke.load_profile(artifact(model), ke.core_of(target), threads, True, env)
        alt = ke.schedule(prof, ALT_SCHED, env.cache / "kernels")
        alt_ms = alt["critical_cycles"] / (clock * 1e6) + e.memory_ms
        out[f"error_pct_{ALT_SCHED}"] = round(100 * (alt_ms - measured) / measured, 1)
    return out


def thread_scaling(tables: list[dict]) -> list[dict]:
    """Per device and model: the published speed-up from 1 to N threads beside the estimated one."""
    one = {(t["device"], r["model"]): r for t in tables if t["threads"] == 1 for r in t["rows"] if "error" not in r}
    out = []
    for t in tables:
        for r in t["rows"]:
            base = one.get((t["device"], r["model"]))
            if t["threads"] > 1 and base and "error" not in r:
                out.append({"device": t["device"], "model": r["model"], "threads": t["threads"],
                            "published_speedup": round(base["measured_ms"] / r["measured_ms"], 2),
                            "estimated_speedup": round(base["estimate_ms"] / r["estimate_ms"], 2),
                            "estimated_speedup_busiest_thread": round(
                                base["estimate_ms"] / r["estimate_busiest_thread_ms"], 2)})
    return out


def run(a) -> dict:
    from benchmarks.common import published as eg

    data = tomllib.loads(DATA.read_text(encoding="utf-8"))
    tables = [t for t in data["tables"] if t["name"].startswith("XNNPACK README") and a.tables in t["name"]]
    if a.threads != "all":
        tables = [t for t in tables if (t["threads"] == 1) == (a.threads == "1")]
    report = {"data": str(DATA.relative_to(ROOT)), "cores": CORES, "alt_sched": ALT_SCHED, "tables": []}
    older = [t for t in data["tables"] if a.older and not t["name"].startswith("XNNPACK README")
             and t["precision"] == "fp32" and t["threads"] == 1 and 3 <= len(t["rows"]) <= 4 and t["device"] in CORES]
    for t in tables + older:
        dev = data["devices"][t["device"]]
        rows = [row(m, float(ms), t, dev, a.timeout) for m, ms in t["rows"]]
        for r in rows:
            print(f"{t['name']}: {r['model']}: " + (f"{r['estimate_ms']} ms vs {r['measured_ms']} "
                                                    f"({r['error_pct']:+.1f} %)" if "error" not in r else r["error"]),
                  flush=True)
        ok = [r for r in rows if "error" not in r]
        base = eg.evaluate(t, dev)
        res = {"name": t["name"], "source": t["source"], "device": t["device"], "threads": t["threads"],
               "kernels": summary([r["error_pct"] for r in ok]),
               "kernels_compute_only": summary([r["compute_only_error_pct"] for r in ok]),
               "priors_only": {k: round(v, 1) for k, v in base["priors_only"].items()},
               "two_corners": {k: round(v, 1) if isinstance(v, float) else v for k, v in base["two_corners"].items()},
               "two_corners_scored_on": [r["model"] for r in base["rows"] if not r["corner"]],
               "rows": rows}
        if t["threads"] > 1:
            res["kernels_busiest_thread_total"] = summary([r["error_pct_busiest_thread"] for r in ok])
        if any(f"error_pct_{ALT_SCHED}" in r for r in ok):
            res[f"kernels_{ALT_SCHED}"] = summary([r[f"error_pct_{ALT_SCHED}"] for r in ok])
        if t in older:
            res["label"] = ("measured with TFLite's kernels before XNNPACK; estimated with today's LiteRT + XNNPACK "
                            "kernels: not a validation of the method, reported apart")
            report.setdefault("older_tables", []).append(res)
        else:
            report["tables"].append(res)
    one = [r["error_pct"] for t in report["tables"] if t["threads"] == 1 for r in t["rows"] if "error" not in r]
    multi = [r["error_pct"] for t in report["tables"] if t["threads"] > 1 for r in t["rows"] if "error" not in r]
    busiest = [r["error_pct_busiest_thread"] for t in report["tables"] if t["threads"] > 1 for r in t["rows"]
               if "error" not in r]
    report["overall"] = {"one_thread": summary(one), "several_threads": summary(multi),
                         "several_threads_busiest_thread_total": summary(busiest),
                         "table_medians_one_thread": [t["kernels"]["median_abs_error_pct"] for t in report["tables"]
                                                      if t["threads"] == 1],
                         "table_medians_several_threads": [t["kernels"]["median_abs_error_pct"]
                                                           for t in report["tables"] if t["threads"] > 1]}
    report["thread_scaling"] = thread_scaling(report["tables"])
    report["bars"] = {"one_thread_median_pct": 12.0, "one_thread_worst_pct": 25.0, "several_threads_median_pct": 20.0}
    for t in report["tables"]:
        k, p, c = t["kernels"], t["priors_only"], t["two_corners"]
        print(f"{t['name']}: kernels median {k['median_abs_error_pct']} % worst {k['worst_abs_error_pct']} % | "
              f"priors only median {p['median_abs_error_pct']} % | two corners median {c['median_abs_error_pct']} %"
              + (f" | busiest thread total median {t['kernels_busiest_thread_total']['median_abs_error_pct']} %"
                 if "kernels_busiest_thread_total" in t else ""))
    for t in report.get("older_tables", []):
        print(f"{t['name']} (older, apart): kernels median {t['kernels']['median_abs_error_pct']} % "
              f"worst {t['kernels']['worst_abs_error_pct']} %")
    print("overall:", report["overall"])
    return report
