"""Guest side of the kernel count: load a model, invoke it between two markers, print the maps.

Standalone (runs in the aarch64 Python of ``make arm-env``, where mobiledeploy is not
installed); it reuses ``emulate_worker``'s runtime wrappers from the same PYTHONPATH.

    python guest.py MODEL [--threads N] [--builtin] [--invokes K] [--maps-only]

Sequence: load the model, one warm-up invoke (weights packed, buffers allocated), then
``openat`` of a path named ``BEGIN`` (it does not exist; qemu's ``-d strace`` logs the
call, which marks the start in the trace), K invokes, the ``END`` marker. Last line of
stdout: JSON with the executable mappings (start, end, offset, path) of every file and,
for LiteRT, the interpreter's nodes (delegate nodes included) for the per-operator names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

BEGIN = "/__mobiledeploy_kernels_begin__"
END = "/__mobiledeploy_kernels_end__"


def mark(path: str) -> None:
    try:
        os.stat(path)
    except OSError:
        pass


def maps() -> list[list]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and "x" in parts[1]:
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                out.append([lo, hi, int(parts[2], 16), parts[5]])
    return out


def litert_nodes(it) -> dict:
    """The interpreter's nodes as [index, op, inputs, outputs, [[name, shape] per output]] and the
    graph's input tensors: which nodes a delegate took is read from these (``kernels.operators``)."""
    try:
        tensors = {d["index"]: [d["name"], [int(v) for v in d["shape"]]] for d in it.get_tensor_details()}
        ops = [[int(o["index"]), o["op_name"], [int(i) for i in o["inputs"]], [int(i) for i in o["outputs"]],
                [tensors.get(int(i), ["?", []]) for i in o["outputs"]]] for o in it._get_ops_details()]
        return {"nodes": ops, "graph_inputs": [int(d["index"]) for d in it.get_input_details()]}
    except Exception:  # noqa: BLE001 - names are optional: the count stands without them
        return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--builtin", action="store_true")
    ap.add_argument("--invokes", type=int, default=1)
    ap.add_argument("--maps-only", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np
    import emulate_worker as w

    try:
        kind = w.LiteRT if args.model.lower().endswith(".tflite") else w.Ort
        model = kind(args.model, args.threads, xnnpack=not args.builtin)
        rng = np.random.default_rng(0)
        x = w.quantize(rng.uniform(-1, 1, model.in_shape).astype(np.float32), model.in_dtype, *model.in_q)
        if not args.maps_only:
            model.run(x)  # warm-up: not counted
            invoke = model.it.invoke if kind is w.LiteRT else (lambda: model.run(x))  # input already set
            mark(BEGIN)
            for _ in range(args.invokes):
                invoke()
            mark(END)
    except Exception as e:  # noqa: BLE001 - one line for the parent
        print(f"{os.path.basename(args.model)}: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 1
    nodes = litert_nodes(model.it) if kind is w.LiteRT and not args.maps_only else {}
    print(json.dumps({"maps": maps(), "runtime": "litert" if kind is w.LiteRT else "onnxruntime",
                      "version": model.version, "invokes": args.invokes, "threads": args.threads} | nodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
