"""Set up the ARM emulation environment (``make arm-env``): qemu, an arm64 Python, the ARM runtimes.

What it does, in order (every step prints one line; a second run finds the stamp and
stops in about a second):

1. ``apt-get install qemu-user-static`` (after one ``apt-get update``) unless
   ``qemu-aarch64-static`` is already there;
2. ``dpkg --add-architecture arm64``, ``apt-get download`` of an arm64 CPython 3.11 and
   the C libraries it and the runtimes link to, ``dpkg -x`` of each into a sysroot;
3. ``pip download`` of the aarch64 CPython 3.11 wheels of numpy, onnxruntime and
   ai-edge-litert at the versions installed in this Python, unpacked into the sysroot;
4. one thin sysroot per emulated CPU model (symlinks + its own ``proc/cpuinfo`` naming
   that CPU, with the features qemu gives the guest), and a smoke test importing both
   runtimes under qemu;
5. ``env.json``: versions, features per CPU, set-up time and download size;
6. ``apt-get install llvm-19`` unless LLVM 19's ``llvm-mca`` and ``llvm-mc`` are there (for
   ``estimate --method kernels``: decoding and scheduling the emulated kernels).

The cache is ``$MOBILEDEPLOY_ARM_CACHE`` or ``~/.cache/mobiledeploy/arm``; ``--force``
rebuilds. Needs an x86_64 Debian host, root for apt-get, and the package registries.
Errors are one line on stderr, exit 1 (2 for an unsupported host).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.parse
import zipfile
from importlib import metadata
from pathlib import Path

from mobiledeploy.errors import MobiledeployError, UsageError
from mobiledeploy.machine import loadavg, possible_cpus
from mobiledeploy.runtimes import emulate as emu

DEBS = ("python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g "
        "libexpat1 libffi8 libbz2-1.0 liblzma5 libssl3 libuuid1").split()
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
QEMU = "qemu-aarch64-static"


def say(msg: str) -> None:
    print(f"arm-env: {msg}", flush=True)


def check_host() -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise UsageError(f"needs an x86_64 Linux host (this is {platform.system()} {platform.machine()}); "
                         "on an arm64 host the runtimes run natively, no emulation needed")
    if not Path("/etc/debian_version").is_file() or not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise UsageError("needs a Debian-based host (apt-get, dpkg and Debian's arm64 packages); "
                         "install qemu-user-static and an arm64 Python 3.11 sysroot by hand elsewhere")


def host_versions() -> dict[str, str]:
    out = {}
    for name in emu.PINNED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise UsageError(f"{name} is not installed in {sys.executable}: run this with the project's "
                             "virtualenv (make arm-env does)") from None
    return out


def run(argv: list[str], what: str, *, cwd: Path | None = None, hint: str = "") -> str:
    """Run a set-up command; its last stderr line becomes a one-line error on failure."""
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        tail = lines[-1].strip()[:300] if lines else f"exit code {proc.returncode}"
        raise MobiledeployError(f"{what} failed: {tail}" + (f" ({hint})" if hint else ""))
    return proc.stdout


class Apt:
    """apt-get, with ``apt-get update`` run at most once per set-up."""

    def __init__(self) -> None:
        self.updated = False

    def need_root(self, what: str) -> None:
        if os.geteuid() != 0:
            raise MobiledeployError(f"{what} needs root (apt-get/dpkg); run `make arm-env` as root or do it by hand")

    def update(self) -> None:
        if not self.updated:
            say("apt-get update")
            out = run(["apt-get", "update"], "apt-get update", hint="is Debian's archive reachable?")
            if "Err:" in out or "Failed to fetch" in out:
                raise MobiledeployError("apt-get update could not reach Debian's archive")
            self.updated = True


def ensure_qemu(apt: Apt) -> tuple[str, int]:
    """(path of qemu-aarch64-static, bytes downloaded for it)."""
    found = shutil.which(QEMU)
    if found:
        return found, 0
    apt.need_root("installing qemu-user-static")
    apt.update()
    size = int(run(["apt-cache", "show", "--no-all-versions", "qemu-user-static"], "apt-cache show")
               .split("\nSize: ", 1)[1].split()[0])
    say("apt-get install qemu-user-static")
    run(["apt-get", "install", "-y", "--no-install-recommends", "qemu-user-static"],
        "apt-get install qemu-user-static", hint="is Debian's archive reachable?")
    return shutil.which(QEMU) or "/usr/bin/" + QEMU, size


def ensure_llvm(apt: Apt) -> str:
    """LLVM 19's tools (llvm-mc, llvm-mca) for ``estimate --method kernels``: their directory."""
    from mobiledeploy.kernels import disasm

    try:
        return str(Path(disasm.llvm_bin("llvm-mca")).parent)
    except UsageError:
        pass
    apt.need_root(f"installing llvm-{disasm.LLVM_VERSION}")
    apt.update()
    say(f"apt-get install llvm-{disasm.LLVM_VERSION}")
    run(["apt-get", "install", "-y", "--no-install-recommends", f"llvm-{disasm.LLVM_VERSION}"],
        f"apt-get install llvm-{disasm.LLVM_VERSION}", hint="is Debian's archive reachable (Debian 12 or later)?")
    return str(Path(disasm.llvm_bin("llvm-mca")).parent)


def download_debs(apt: Apt, dest: Path) -> dict[str, str]:
    """arm64 .debs into ``dest`` (kept: a re-run downloads nothing); {package: version}."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0] for p in dest.glob("*.deb")}
    missing = [d for d in DEBS if d not in have]
    if missing:
        if "arm64" not in run(["dpkg", "--print-foreign-architectures"], "dpkg").split():
            apt.need_root("adding the arm64 architecture")
            say("dpkg --add-architecture arm64")
            run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
            apt.updated = False  # the arm64 package lists are new
        apt.update()
        say(f"apt-get download {len(missing)} arm64 packages")
        run(["apt-get", "download", *[f"{d}:arm64" for d in missing]], "apt-get download (arm64)", cwd=dest,
            hint="is Debian's archive reachable?")
    return {p.name.split("_")[0]: urllib.parse.unquote(p.name.split("_")[1]) for p in sorted(dest.glob("*.deb"))}


def download_wheels(dest: Path, versions: dict[str, str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    plats = [a for p in WHEEL_PLATFORMS for a in ("--platform", p)]
    want = [f"{k}=={v}" for k, v in versions.items()]
    say("pip download (aarch64, CPython 3.11): " + " ".join(want))
    run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", *plats, "--python-version",
         "3.11", "--implementation", "cp", "--abi", "cp311", "--dest", str(dest), *want],
        "pip download of the aarch64 wheels", hint="is PyPI reachable, and do these versions have aarch64 "
                                                  "wheels for CPython 3.11?")


def wheel_dist(whl: Path) -> tuple[str, str]:
    """(distribution name as PyPI normalises it, version) from a wheel's file name."""
    name, version = whl.name.split("-")[:2]
    return name.replace("_", "-").lower(), version


def wheel_versions(wheels: Path) -> dict[str, str]:
    return dict(wheel_dist(w) for w in wheels.glob("*.whl"))


def build_sysroot(cache: Path, debs: Path, wheels: Path) -> Path:
    """Unpack the .debs and wheels into a fresh ``cache/sysroot`` (built aside, then renamed)."""
    final, tmp = cache / "sysroot", cache / "sysroot.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    say(f"unpacking {len(list(debs.glob('*.deb')))} .debs and {len(list(wheels.glob('*.whl')))} wheels")
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}")
    site = tmp / emu.GUEST_SITE
    site.mkdir(parents=True)
    for whl in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
    # absolute symlinks would resolve on the host, not in the sysroot (qemu -L follows them there)
    for link in [p for p in tmp.rglob("*") if p.is_symlink() and os.readlink(p).startswith("/")]:
        target = tmp / os.readlink(link).lstrip("/")
        link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))
    if sys.version_info[:2] == (3, 11):  # same bytecode as the guest's 3.11: compile here, not under qemu
        say("compiling the guest's Python files to bytecode")
        for d in (tmp / "usr/lib/python3.11", site):
            compileall.compile_dir(str(d), quiet=2, workers=2, stripdir=str(tmp), prependdir="/")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def build_cpu_roots(env: emu.ArmEnv) -> dict[str, dict]:
    """One thin sysroot per CPU model; its cpuinfo lists the features qemu gives that model."""
    processors = possible_cpus()  # the guest reads the host's /sys: its cpuinfo must list the same CPUs
    found = {}
    for model in emu.EMULATED_CPUS.values():
        root = emu.cpu_root(env.cache, model.name)
        shutil.rmtree(root, ignore_errors=True)
        (root / "proc").mkdir(parents=True)
        for entry in env.sysroot.iterdir():
            if entry.name != "proc":
                (root / entry.name).symlink_to(os.path.relpath(entry, root))
        (root / "proc" / "cpuinfo").write_text(emu.cpuinfo_text(model, [], processors))
        caps = emu.hwcaps(model.name, env=env)
        (root / "proc" / "cpuinfo").write_text(emu.cpuinfo_text(model, caps.features, processors))
        found[model.name] = caps.to_json() | {"qemu_cpu": model.qemu_cpu, "midr": hex(model.midr)}
        flags = ", ".join(k for k, v in caps.key.items() if v)
        say(f"{model.name:12s} -cpu {model.qemu_cpu:12s} part 0x{model.part:03x}: {flags}")
    return found


def qemu_version(qemu: str) -> str:
    return run([qemu, "--version"], "qemu --version").splitlines()[0].strip()


def up_to_date(cache: Path) -> dict | None:
    """The stamp of a complete environment pinned to this host's versions (find_env checks both)."""
    try:
        return emu.find_env(cache).info
    except UsageError:
        return None


def setup(cache: Path, *, force: bool = False) -> dict:
    check_host()
    versions = host_versions()
    if not force and (info := up_to_date(cache)):
        say(f"up to date in {cache} ({info['qemu_version']}; " + ", ".join(
            f"{k} {v}" for k, v in info["wheels"].items() if k in emu.PINNED) + ")")
        say(f"LLVM tools in {ensure_llvm(Apt())}")
        return info
    t0 = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "env.json").unlink(missing_ok=True)
    apt = Apt()
    qemu, qemu_bytes = ensure_qemu(apt)
    before = {p: p.stat().st_size for p in cache.glob("*/*") if p.suffix in (".deb", ".whl")}
    debs = download_debs(apt, cache / "debs")
    for w in (cache / "wheels").glob("*.whl"):  # wheels of versions the host no longer has
        name, version = wheel_dist(w)
        if name in versions and version != versions[name]:
            w.unlink()
    download_wheels(cache / "wheels", versions)
    files = {p: p.stat().st_size for p in cache.glob("*/*") if p.suffix in (".deb", ".whl")}
    downloaded = qemu_bytes + sum(s for p, s in files.items() if p not in before)
    from_nothing = qemu_bytes > 0 and not before  # no qemu and an empty cache: the full set-up cost
    sysroot = build_sysroot(cache, cache / "debs", cache / "wheels")
    env = emu.ArmEnv(cache, qemu, sysroot, wheel_versions(cache / "wheels"))
    cpus = build_cpu_roots(env)
    llvm = ensure_llvm(apt)
    guest = emu.guest_versions("cortex-a76", env=env)
    say(f"smoke test on cortex-a76: {guest['machine']} Python {guest['python']}, numpy {guest['numpy']}, "
        f"onnxruntime {guest['onnxruntime']}, ai-edge-litert {guest['ai-edge-litert']} "
        f"(imported in {guest['seconds']} s, emulated)")
    for k, v in versions.items():
        if guest.get(k) != v:
            raise MobiledeployError(f"the guest imports {k} {guest.get(k)}, expected {v}")
    info = {"format": emu.ENV_FORMAT, "qemu": qemu, "qemu_version": qemu_version(qemu), "sysroot": str(sysroot),
            "python": guest["python"], "llvm": llvm, "debs": debs, "wheels": env.wheels, "cpus": cpus,
            "processors": possible_cpus(), "setup_seconds": round(time.perf_counter() - t0, 1),
            "from_nothing": from_nothing, "download_bytes": downloaded, "artifact_bytes": sum(files.values()) + qemu_bytes,
            "disk_bytes": sum(p.stat().st_size for p in sysroot.rglob("*") if p.is_file() and not p.is_symlink()),
            "loadavg_1_5_15": loadavg(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = cache / "env.json.part"
    tmp.write_text(json.dumps(info, indent=1))
    tmp.replace(cache / "env.json")
    say(f"ready in {cache}: {info['setup_seconds']} s, {downloaded / 1e6:.1f} MB downloaded, "
        f"sysroot {info['disk_bytes'] / 1e6:.0f} MB on disk")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help=f"default: ${emu.CACHE_ENV} or ~/.cache/mobiledeploy/arm")
    ap.add_argument("--force", action="store_true", help="rebuild the sysroot even if it is up to date")
    args = ap.parse_args(argv)
    try:
        setup(args.cache or emu.cache_dir(), force=args.force)
    except MobiledeployError as e:
        print(f"arm-env: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("arm-env: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
