"""Run the real aarch64 LiteRT and ONNX Runtime kernels under qemu, per emulated CPU model.

``make arm-env`` (``scripts/arm_env.py``) builds, once, under a cache directory: an arm64
CPython 3.11 sysroot from Debian's packages, the aarch64 wheels of the runtimes pinned to
the versions installed on the host, and one thin sysroot per CPU model whose
``proc/cpuinfo`` names that CPU (qemu 7.2 shows the guest the host's x86 ``/proc/cpuinfo``,
on which the CPU-detection library of both runtimes crashes; ``-L SYSROOT`` serves this
file instead). This module only uses that environment; it never installs anything.

- ``EMULATED_CPUS``: the CPU models (qemu ``-cpu`` string, the MIDR part the runtimes see);
- ``find_env()``: the environment, or a ``UsageError`` naming ``make arm-env``;
- ``command(cpu, argv)``: ``(argv, env)`` running ``python ARGV...`` on the emulated CPU;
- ``hwcaps(cpu)``: the ISA features (``AT_HWCAP``/``AT_HWCAP2``) the guest sees;
- ``compare_emulated(model, inputs, cpu)``: outputs on the emulated CPU vs. the host.

Emulated wall time is not a latency: qemu translates every instruction, so it is tens to
hundreds of times the host's and it distorts the ratio between kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from mobiledeploy.errors import RuntimeFailure, UsageError

CACHE_ENV = "MOBILEDEPLOY_ARM_CACHE"
SETUP_HINT = "run `make arm-env` (Debian x86_64 host; fetches from Debian's archive and PyPI)"
ENV_FORMAT = 1
GUEST_SITE = "opt/mobiledeploy/site-packages"  # inside the sysroot
GUEST_PYTHON = "usr/bin/python3.11"
PINNED = ("numpy", "onnxruntime", "ai-edge-litert")  # guest wheels pinned to the host's versions
EMULATION_SLOWDOWN = 50  # emulated wall time vs. host: 35-450x measured; timeouts scale by this
EMULATED_LABEL = "emulated, not a latency"
WORKER = Path(__file__).with_name("emulate_worker.py")


@dataclass(frozen=True)
class EmulatedCpu:
    """One CPU model: what qemu emulates and what the guest's /proc/cpuinfo says it is."""

    name: str
    qemu_cpu: str  # the -cpu argument
    part: int  # MIDR part number in the served cpuinfo (the runtimes pick tuned kernels by it)
    implementer: int = 0x41  # Arm
    variant: int = 0
    revision: int = 0
    notes: str = ""

    @property
    def midr(self) -> int:
        return (self.implementer << 24) | (self.variant << 20) | (0xF << 16) | (self.part << 4) | self.revision


EMULATED_CPUS: dict[str, EmulatedCpu] = {c.name: c for c in (
    EmulatedCpu("cortex-a53", "cortex-a53", 0xD03, variant=0x0, revision=4,
                notes="ARMv8.0-A: NEON, no dot-product, no fp16 arithmetic (little cores up to 2017)"),
    EmulatedCpu("cortex-a55", "cortex-a76", 0xD05, variant=0x2, revision=0,
                notes="qemu 7.2 has no Cortex-A55 model: the Cortex-A76 model runs it, which has the "
                      "same ARMv8.2-A features the runtimes look for (dot-product, fp16, RCpc); the "
                      "served cpuinfo says Cortex-A55 (part 0xd05), so the runtimes pick their "
                      "A55-tuned kernels; the ID registers read in the guest are the A76's"),
    EmulatedCpu("cortex-a76", "cortex-a76", 0xD0B, variant=0x4, revision=1,
                notes="ARMv8.2-A with dot-product and fp16: the closest model to the Pixel 4's big "
                      "cores (Kryo 485 Gold is a Cortex-A76 derivative)"),
    EmulatedCpu("neoverse-n1", "neoverse-n1", 0xD0C, variant=0x4, revision=1,
                notes="the server sibling of Cortex-A76 (same ISA features)"),
    EmulatedCpu("max", "max", 0x051, implementer=0x00,
                notes="every feature qemu 7.2 implements, SVE, SVE2, i8mm, bf16 and SME included; "
                      "not a real core (MIDR as qemu's own). Under qemu 7.2, LiteRT int8 with XNNPACK "
                      "gives wrong results on it (built-in kernels are right): use max,sme=off"),
    EmulatedCpu("max,sme=off", "max,sme=off", 0x051, implementer=0x00,
                notes="qemu's max without SME: SVE, SVE2, i8mm, bf16 and dot-product"),
)}

# Linux arch/arm64/include/uapi/asm/hwcap.h: bit -> name as /proc/cpuinfo prints it
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
               "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb "
               "paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm "
                "svef64mm svebf16 i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 "
                "smei8i32 smef16f32 smeb16f32 smef32f32 smefa64").split()
# the features the runtimes' kernel choice depends on: short name -> cpuinfo names that must all be set
KEY_FEATURES = {"asimd": ("asimd",), "fp16": ("fphp", "asimdhp"), "dotprod": ("asimddp",),
                "i8mm": ("i8mm",), "sve": ("sve",), "sme": ("sme",)}


def cpu(name: str) -> EmulatedCpu:
    """The registry entry for ``name``; ``UsageError`` listing the choices otherwise."""
    try:
        return EMULATED_CPUS[name]
    except KeyError:
        raise UsageError(f"unknown emulated CPU {name!r}; choose from {', '.join(EMULATED_CPUS)}") from None


def for_target(value: str, target) -> str:
    """The CPU model ``--emulate VALUE`` names: VALUE, or for ``target`` the profile's ``emulate``."""
    if value != "target":
        return cpu(value).name
    if not getattr(target, "emulate", None):
        raise UsageError(f"target {target.name!r} has no emulate field: give a CPU model "
                         f"(--emulate {'|'.join(EMULATED_CPUS)}) or a profile that has one (--target)")
    return cpu(target.emulate).name


def describe_features(key: dict[str, bool]) -> str:
    """'fp16, dotprod (no i8mm, sve, sme)': the key ISA features beyond NEON, present and absent."""
    have = [k for k, v in key.items() if v and k != "asimd"]
    lack = [k for k, v in key.items() if not v]
    return (", ".join(have) or "NEON only") + (f" (no {', '.join(lack)})" if lack else "")


def decode_hwcaps(hwcap: int, hwcap2: int) -> list[str]:
    """Feature names set in ``AT_HWCAP`` and ``AT_HWCAP2``, in the kernel's order."""
    return ([n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
            + [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1])


def key_features(features: list[str]) -> dict[str, bool]:
    """{asimd, fp16, dotprod, i8mm, sve, sme: present?} from decoded feature names."""
    have = set(features)
    return {k: all(n in have for n in need) for k, need in KEY_FEATURES.items()}


def cpuinfo_text(model: EmulatedCpu, features: list[str], processors: list[int]) -> str:
    """An arm64 Linux /proc/cpuinfo for ``model`` (the kernel's format, arch/arm64/kernel/cpuinfo.c)."""
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{model.implementer:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{model.variant:x}\nCPU part\t: 0x{model.part:03x}\n"
             f"CPU revision\t: {model.revision}\n\n")
    return "".join(f"processor\t: {i}\n{block}" for i in processors)


# ---------------------------------------------------------------- the environment


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mobiledeploy" / "arm").expanduser()


def cpu_root(cache: Path, name: str) -> Path:
    """The thin sysroot of one CPU model (symlinks to the shared sysroot + its own proc/cpuinfo)."""
    return cache / "cpus" / name.replace(",", "_").replace("=", "-")


@dataclass
class ArmEnv:
    cache: Path
    qemu: str
    sysroot: Path
    wheels: dict[str, str]
    info: dict = field(default_factory=dict)  # the whole stamp file

    @property
    def site_packages(self) -> Path:
        return self.sysroot / GUEST_SITE


def find_env(cache: str | os.PathLike | None = None) -> ArmEnv:
    """The environment ``make arm-env`` built; ``UsageError`` naming ``make arm-env`` when it is
    absent, incomplete, or pinned to runtime versions the host no longer has."""
    cache = Path(cache) if cache else cache_dir()
    stamp = cache / "env.json"
    if not stamp.is_file():
        raise UsageError(f"no ARM emulation environment in {cache}: {SETUP_HINT}")
    try:
        info = json.loads(stamp.read_text())
        env = ArmEnv(cache, info["qemu"], Path(info["sysroot"]), dict(info["wheels"]), info)
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"the ARM emulation environment in {cache} is damaged: {SETUP_HINT}") from None
    if info.get("format") != ENV_FORMAT:
        raise UsageError(f"the ARM emulation environment in {cache} is from another version: {SETUP_HINT}")
    if not os.access(env.qemu, os.X_OK):
        raise UsageError(f"{env.qemu} is missing (qemu-user-static): {SETUP_HINT}")
    if not (env.sysroot / GUEST_PYTHON).exists() or not env.site_packages.is_dir():
        raise UsageError(f"the ARM sysroot in {env.sysroot} is incomplete: {SETUP_HINT}")
    for name in PINNED:
        try:
            host = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if env.wheels.get(name) != host:
            raise UsageError(f"the ARM environment has {name} {env.wheels.get(name)} but the host has {host}: "
                             f"{SETUP_HINT}")
    return env


def command(cpu_name: str, argv: list[str], *, env: ArmEnv | None = None,
            pythonpath: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """``(argv, environ)`` that run ``python3.11 -S ARGV...`` (aarch64) on the emulated ``cpu_name``.

    ``argv`` is what follows ``python``: a script path or ``-m module`` and its arguments.
    The guest imports numpy, onnxruntime and ai_edge_litert from the environment and, by
    default, this ``mobiledeploy`` source tree (so ``-m mobiledeploy._child`` works);
    ``pythonpath`` replaces that extra entry. The environ is clean (the host's Python
    variables would point the guest at x86 packages); ``MOBILEDEPLOY_*`` variables pass.
    """
    model = cpu(cpu_name)
    env = env or find_env()
    root = cpu_root(env.cache, model.name)
    if not (root / "proc" / "cpuinfo").is_file():
        raise UsageError(f"the ARM environment has no sysroot for {model.name}: {SETUP_HINT}")
    if pythonpath is None:
        pythonpath = [str(Path(__file__).resolve().parents[2])]
    return ([env.qemu, "-cpu", model.qemu_cpu, "-L", str(root), str(root / GUEST_PYTHON), "-S", *argv],
            guest_environ(env, pythonpath))


def guest_environ(env: ArmEnv, pythonpath: list[str]) -> dict[str, str]:
    """The guest's clean environ: the arm64 site-packages, then ``pythonpath``; ``MOBILEDEPLOY_*`` pass."""
    environ = {"PYTHONPATH": os.pathsep.join([str(env.site_packages), *pythonpath]),
               "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8",
               "PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
               "TMPDIR": os.environ.get("TMPDIR", "/tmp")}
    return environ | {k: v for k, v in os.environ.items() if k.startswith("MOBILEDEPLOY_")}


def scale_timeout(host_seconds: float) -> float:
    """A timeout for an emulated run of what takes ``host_seconds`` on the host."""
    return host_seconds * EMULATION_SLOWDOWN


HWCAP_PROBE = ("import ctypes\nlibc = ctypes.CDLL(None)\nlibc.getauxval.restype = ctypes.c_ulong\n"
                "libc.getauxval.argtypes = [ctypes.c_ulong]\nprint(libc.getauxval(16), libc.getauxval(26))")


@dataclass(frozen=True)
class HwCaps:
    cpu: str
    hwcap: int
    hwcap2: int

    @property
    def features(self) -> list[str]:
        return decode_hwcaps(self.hwcap, self.hwcap2)

    @property
    def key(self) -> dict[str, bool]:
        return key_features(self.features)

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "hwcap": hex(self.hwcap), "hwcap2": hex(self.hwcap2),
                "features": self.features, **self.key}


def hwcaps(cpu_name: str, *, env: ArmEnv | None = None, timeout_s: float = 120.0) -> HwCaps:
    """The ``AT_HWCAP``/``AT_HWCAP2`` the guest sees on ``cpu_name`` (read with getauxval)."""
    argv, environ = command(cpu_name, ["-c", HWCAP_PROBE], env=env, pythonpath=[])
    out = run_guest(argv, environ, timeout_s, f"HWCAP probe on {cpu_name}")
    try:
        hw, hw2 = (int(v) for v in out.split()[-2:])
    except ValueError:
        raise RuntimeFailure(f"HWCAP probe on {cpu_name}: unexpected output {out[-200:]!r}") from None
    return HwCaps(cpu_name, hw, hw2)


def run_guest(argv: list[str], environ: dict[str, str], timeout_s: float, what: str) -> str:
    """stdout of a guest command; ``RuntimeFailure`` (one line) on a crash, an error or a timeout."""
    try:
        proc = subprocess.run(argv, env=environ, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout_s, text=True)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"{what}: no result after {timeout_s:.0f} s under emulation (timed out)") from None
    if proc.returncode != 0:
        raise RuntimeFailure(f"{what}: {_failure(proc.returncode, proc.stderr)}")
    return proc.stdout


def _failure(returncode: int, stderr: str) -> str:
    lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
    tail = lines[-1][:300] if lines else ""
    if returncode < 0 or "uncaught target signal" in (stderr or ""):
        return "crashed under emulation" + (f" ({tail})" if tail else "")
    return f"failed (exit code {returncode})" + (f": {tail}" if tail else "")


# ---------------------------------------------------------------- numerics vs. the host


@dataclass
class EmulatedComparison:
    """One model's outputs on an emulated CPU vs. the same worker on the host."""

    model: str
    cpu: str
    runtime: str = ""
    xnnpack: bool = True  # LiteRT: the XNNPACK delegate (default) or the built-in kernels
    samples: int = 0
    integer_outputs: bool = False  # raw outputs are int8/uint8: bit-exactness is meaningful
    bit_exact: bool | None = None  # raw outputs identical (any dtype)
    max_abs_diff: float | None = None  # of the dequantized float outputs
    top1_agreement: float | None = None  # fraction of samples with the same argmax
    host_seconds: float | None = None  # inference wall time on the host
    emulated_seconds: float | None = None  # inference wall time under qemu: EMULATED_LABEL
    error: str | None = None
    outputs: object = field(default=None, repr=False)  # the emulated float outputs (first output), for eval

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "outputs"} | {"emulated_seconds_label": EMULATED_LABEL}


def run_worker(model_path: str | os.PathLike, x, *, cpu_name: str | None, timeout_s: float,
               threads: int = 1, xnnpack: bool = True, env: ArmEnv | None = None) -> dict:
    """Run the worker on ``x`` (float32, one sample per row) on the host (``cpu_name=None``)
    or under emulation; return its output arrays and metadata. ``RuntimeFailure`` on failure."""
    import numpy as np

    model_path = Path(model_path).resolve()
    where = "host" if cpu_name is None else cpu_name
    with tempfile.TemporaryDirectory(prefix="mobiledeploy-emu-") as tmp:
        src, dst = Path(tmp, "in.npz"), Path(tmp, "out.npz")
        np.savez(src, x=np.ascontiguousarray(x, dtype=np.float32))
        args = [str(WORKER), str(model_path), str(src), str(dst), "--threads", str(threads)]
        args += [] if xnnpack else ["--builtin"]
        if cpu_name is None:
            argv, environ = [sys.executable, *args], dict(os.environ)
        else:
            argv, environ = command(cpu_name, args, env=env, pythonpath=[])
        run_guest(argv, environ, timeout_s, f"{model_path.name} on {where}")
        if not dst.is_file():
            raise RuntimeFailure(f"{model_path.name} on {where}: the worker wrote no outputs")
        with np.load(dst) as z:
            out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


def compare_emulated(model_path: str | os.PathLike, inputs, cpu_name: str, timeout: float = 600.0, *,
                     threads: int = 1, xnnpack: bool = True, env: ArmEnv | None = None,
                     host: dict | None = None) -> EmulatedComparison:
    """Run ``model_path`` on ``inputs`` (float32, one preprocessed sample per row; the worker
    quantizes them for integer inputs) on the host and on the emulated ``cpu_name``, compare.

    ``timeout`` bounds the emulated run (the host run gets ``timeout / EMULATION_SLOWDOWN``,
    at least 60 s); ``host`` reuses an earlier ``run_worker(..., cpu_name=None)`` result
    (with the same ``xnnpack``). ``xnnpack=False``: LiteRT's built-in kernels on both sides.
    Failures do not raise: they fill ``error`` (a bad ``cpu_name`` or a missing environment
    still raise ``UsageError``).
    """
    import numpy as np

    cpu(cpu_name)
    env = env or find_env()
    res = EmulatedComparison(model=Path(model_path).name, cpu=cpu_name, samples=int(len(inputs)), xnnpack=xnnpack)
    try:
        if host is None:
            host = run_worker(model_path, inputs, cpu_name=None, threads=threads, xnnpack=xnnpack,
                              timeout_s=max(60.0, timeout / EMULATION_SLOWDOWN))
        emu = run_worker(model_path, inputs, cpu_name=cpu_name, timeout_s=timeout, threads=threads,
                         xnnpack=xnnpack, env=env)
    except RuntimeFailure as e:
        res.error = str(e)
        return res
    res.runtime = emu["meta"]["runtime"]
    res.host_seconds, res.emulated_seconds = host["meta"]["seconds"], emu["meta"]["seconds"]
    raws = sorted(k for k in host if k.startswith("raw_"))
    res.integer_outputs = all(np.issubdtype(host[k].dtype, np.integer) for k in raws)
    res.bit_exact = all(host[k].dtype == emu[k].dtype and np.array_equal(host[k], emu[k]) for k in raws)
    floats = sorted(k for k in host if k.startswith("float_"))
    res.max_abs_diff = max(float(np.max(np.abs(host[k].astype(np.float64) - emu[k].astype(np.float64))))
                           for k in floats)
    a, b = host["float_0"], emu["float_0"]
    res.outputs = b
    res.top1_agreement = float(np.mean(a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)))
    return res


def guest_versions(cpu_name: str, *, env: ArmEnv | None = None, timeout_s: float = 300.0) -> dict[str, str]:
    """The versions the guest imports (a smoke test of the environment)."""
    probe = ("import json, platform, numpy, onnxruntime\nfrom importlib import metadata\n"
             "from ai_edge_litert.interpreter import Interpreter\n"
             "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
             "'numpy': numpy.__version__, 'onnxruntime': onnxruntime.__version__, "
             "'ai-edge-litert': metadata.version('ai-edge-litert')}))")
    argv, environ = command(cpu_name, ["-c", probe], env=env, pythonpath=[])
    t0 = time.perf_counter()
    out = run_guest(argv, environ, timeout_s, f"import of the runtimes on {cpu_name}")
    return json.loads(out.strip().splitlines()[-1]) | {"seconds": round(time.perf_counter() - t0, 1)}
