"""Run one .tflite or .onnx model over a batch of inputs and save its raw and float outputs.

Standalone: it needs only the standard library, numpy and the runtime (ai_edge_litert or
onnxruntime), so the same file runs on the host and, under qemu, on the aarch64 Python
of ``make arm-env``, where mobiledeploy itself is not installed.

    python emulate_worker.py MODEL IN.npz OUT.npz [--threads N] [--builtin]

IN.npz holds ``x``: float32 samples, one per row, fed one at a time (batch 1) to the
model's first input, quantized with its scale and zero point when that input is an
integer tensor. OUT.npz holds, per output i, ``raw_i`` (the tensors as the runtime gave
them, stacked) and ``float_i`` (dequantized), and ``meta`` (JSON: runtime, versions,
inference seconds). Failures: one line on stderr, exit code 1, no OUT file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """``x`` in the model input's type: affine-quantized for an integer input, cast otherwise."""
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * np.float32(scale)
    return y.astype(np.float32)


class LiteRT:
    def __init__(self, path: str, threads: int, xnnpack: bool = True) -> None:
        from ai_edge_litert import interpreter as lit

        self.version = _dist_version("ai-edge-litert")
        resolver = lit.OpResolverType.AUTO if xnnpack else lit.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.it = lit.Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=resolver)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()
        self.in_dtype = np.dtype(self.inp["dtype"])
        self.in_shape = tuple(int(d) for d in self.inp["shape"])
        self.in_q = tuple(self.inp.get("quantization", (0.0, 0)))
        self.out_q = [tuple(d.get("quantization", (0.0, 0))) for d in self.outs]

    def run(self, arr: np.ndarray) -> list[np.ndarray]:
        self.it.set_tensor(self.inp["index"], arr)
        self.it.invoke()
        return [self.it.get_tensor(d["index"]).copy() for d in self.outs]


class Ort:
    def __init__(self, path: str, threads: int, xnnpack: bool = True) -> None:
        import onnxruntime as ort

        self.version = ort.__version__
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0]
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8,
                 "tensor(uint8)": np.uint8}
        self.in_dtype = np.dtype(types.get(self.inp.type, np.float32))
        self.in_shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in self.inp.shape)
        self.in_q = (0.0, 0)  # QDQ models take float inputs
        self.out_q = [(0.0, 0)] * len(self.sess.get_outputs())

    def run(self, arr: np.ndarray) -> list[np.ndarray]:
        return list(self.sess.run(None, {self.inp.name: arr}))


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("inputs")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--builtin", action="store_true", help="LiteRT: built-in kernels, no XNNPACK delegate")
    args = ap.parse_args(argv)
    name = os.path.basename(args.model)
    try:
        kind = LiteRT if args.model.lower().endswith(".tflite") else Ort
        t0 = time.perf_counter()
        model = kind(args.model, args.threads, xnnpack=not args.builtin)
        load_s = time.perf_counter() - t0
        with np.load(args.inputs) as z:
            x = z["x"]
        raws: list[list[np.ndarray]] = [[] for _ in model.out_q]
        seconds = 0.0
        for sample in x:
            arr = quantize(sample.reshape(model.in_shape), model.in_dtype, *model.in_q)
            t0 = time.perf_counter()
            outs = model.run(arr)
            seconds += time.perf_counter() - t0
            for acc, y in zip(raws, outs):
                acc.append(y)
        arrays = {}
        for i, (acc, q) in enumerate(zip(raws, model.out_q)):
            arrays[f"raw_{i}"] = np.stack(acc)
            arrays[f"float_{i}"] = _dequantize(arrays[f"raw_{i}"], *q)
        meta = {"runtime": "litert" if kind is LiteRT else "onnxruntime", "version": model.version,
                "numpy": np.__version__, "machine": platform.machine(), "seconds": seconds,
                "load_seconds": load_s, "samples": int(len(x)), "threads": args.threads,
                "xnnpack": not args.builtin,
                "outputs": [{"dtype": arrays[f"raw_{i}"].dtype.name, "scale": float(q[0]), "zero_point": int(q[1])}
                            for i, q in enumerate(model.out_q)]}
        tmp = args.out + ".part.npz"
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, args.out)
    except Exception as e:  # noqa: BLE001 - one line for the parent
        print(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
