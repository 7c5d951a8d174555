"""A sweep job's result (``SweepRow``) and its artifacts' rows (``ArtifactRow``), as typed records.

``run_job`` returns a ``SweepRow``; the driver writes ``row.to_json()`` to ``rows/`` and a
rerun reads it back with ``SweepRow.from_json``, which refuses (``RowShapeError``, naming
what is wrong) any document of another shape: a kept file that is not one this version
wrote is never trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class RowShapeError(ValueError):
    """A result document that is not one ``SweepRow.to_json`` writes (the message says why)."""


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt(v, kind) -> bool:
    return v is None or (_num(v) if kind == "num" else isinstance(v, kind))


@dataclass
class ArtifactRow:
    """One artifact of a job's export: its file, latency, accuracy and device estimates."""

    file: str
    path: str
    format: str
    precision: str
    size_bytes: int
    sha256: str | None = None
    validation: str | None = None  # the export's validation summary
    status: str = "ok"
    error: str | None = None
    runtime: str | None = None
    host_ms: dict | None = None  # mean, std, min, p50, p90, p99, max
    samples_ms: list = field(default_factory=list)
    top1: float | None = None
    top5: float | None = None
    estimates: dict = field(default_factory=dict)  # {target: {"ms", "fitted", "error", "target_hash", ["method"]}}
    init_ms: float | None = None
    peak_rss_mb: float | None = None
    eval_samples: int | None = None
    eval_data: str | None = None
    benched: bool = False  # init_ms and peak_rss_mb were measured (written only then)
    evaluated: bool = False  # eval_samples and eval_data were measured (written only then)
    degraded: dict | None = None  # the export's mark: {"top1_agreement", "floor"} (models.artifacts.degraded_mark)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("file", "path", "format", "precision", "size_bytes", "sha256",
                                           "validation", "status", "error", "runtime", "host_ms", "samples_ms",
                                           "top1", "top5", "estimates", "degraded")}
        if self.benched:
            d |= {"init_ms": self.init_ms, "peak_rss_mb": self.peak_rss_mb}
        if self.evaluated:
            d |= {"eval_samples": self.eval_samples, "eval_data": self.eval_data}
        return d

    @classmethod
    def from_json(cls, a) -> ArtifactRow:
        if not isinstance(a, dict):
            raise RowShapeError("an artifact is not an object")
        f = a.get("file")
        if not isinstance(f, str) or not f or Path(f).name != f or f in (".", "..") \
                or not isinstance(a.get("path"), str):
            raise RowShapeError("an artifact names no file of this config's export")
        for key in ("format", "precision", "status"):
            if not isinstance(a.get(key), str):
                raise RowShapeError(f"an artifact's {key!r} is not a string")
        if not isinstance(a.get("size_bytes"), int) or isinstance(a["size_bytes"], bool) or a["size_bytes"] < 0:
            raise RowShapeError("an artifact's size is not a byte count")
        if not all(_opt(a.get(k), kind) for k, kind in (("runtime", str), ("error", str), ("sha256", str),
                                                       ("top1", "num"), ("top5", "num"), ("host_ms", dict))):
            raise RowShapeError("an artifact field has the wrong type")
        if not all(_opt((a.get("host_ms") or {}).get(k), "num") for k in ("p50", "mean", "min")):
            raise RowShapeError("a latency is not a number")
        if not isinstance(a.get("samples_ms", []), list) or not all(_num(v) for v in a.get("samples_ms", [])):
            raise RowShapeError("the latency samples are not numbers")
        deg = a.get("degraded")
        if not (deg is None or (isinstance(deg, dict) and all(_opt(deg.get(k), "num")
                                                             for k in ("top1_agreement", "floor")))):
            raise RowShapeError("an artifact's degraded mark is malformed")
        est = a.get("estimates", {})
        if not isinstance(est, dict) or not all(isinstance(e, dict) and _opt(e.get("ms"), "num") and
                                                _opt(e.get("target_hash"), str) and _opt(e.get("method"), str)
                                                for e in est.values()):
            raise RowShapeError("an estimate is malformed")
        return cls(file=f, path=a["path"], format=a["format"], precision=a["precision"],
                   size_bytes=a["size_bytes"], sha256=a.get("sha256"), validation=a.get("validation"),
                   status=a["status"], error=a.get("error"), runtime=a.get("runtime"), host_ms=a.get("host_ms"),
                   samples_ms=list(a.get("samples_ms", [])), top1=a.get("top1"), top5=a.get("top5"),
                   estimates=dict(est), init_ms=a.get("init_ms"), peak_rss_mb=a.get("peak_rss_mb"),
                   eval_samples=a.get("eval_samples"), eval_data=a.get("eval_data"), degraded=deg,
                   benched="init_ms" in a or "peak_rss_mb" in a, evaluated="eval_samples" in a or "eval_data" in a)


@dataclass
class SweepRow:
    """One job's result: ``status`` ok, partial (some artifacts failed) or error (``stage`` says where)."""

    name: str
    row_key: str
    export_key: str
    export_dir: str
    status: str = "ok"
    error: str | None = None
    stage: str | None = None  # export, bench, eval, estimate, worker: where an error happened
    node: dict | None = None  # host, cpu, pid (and the Ray node)
    timings_s: dict = field(default_factory=dict)
    artifacts: list[ArtifactRow] = field(default_factory=list)
    model: dict = field(default_factory=dict)  # the export manifest's model facts
    warnings: list[str] = field(default_factory=list)
    export_reused: bool | None = None  # None: no export (it failed)
    versions: dict | None = None
    bench: dict | None = None  # label, settings, loadavg_1m
    usage_error: bool | None = None  # the failure was the user's input
    traceback: str | None = None  # an internal error's traceback

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict:
        d = {"name": self.name, "row_key": self.row_key, "export_key": self.export_key, "status": self.status,
             "error": self.error, "stage": self.stage, "node": self.node, "timings_s": dict(self.timings_s),
             "artifacts": [a.to_json() for a in self.artifacts], "model": self.model,
             "warnings": list(self.warnings), "export_dir": self.export_dir}
        for k in ("export_reused", "versions", "bench", "usage_error", "traceback"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def from_json(cls, row, *, name: str | None = None, row_key: str | None = None) -> SweepRow:
        """The row in ``row`` (parsed JSON); ``RowShapeError`` when it is not one ``to_json`` writes,
        or (``name``/``row_key`` given) when it was written for another config."""
        if not isinstance(row, dict):
            raise RowShapeError(f"a JSON {type(row).__name__}, not an object")
        for key, kind in (("name", str), ("row_key", str), ("status", str), ("artifacts", list), ("model", dict),
                          ("timings_s", dict)):
            if not isinstance(row.get(key), kind):
                raise RowShapeError(f"{key!r} is missing or not a {kind.__name__}")
        if (name is not None and row["name"] != name) or (row_key is not None and row["row_key"] != row_key):
            raise RowShapeError("written for another config")
        for key, kind in (("error", str), ("node", dict), ("bench", dict), ("versions", dict), ("export_dir", str)):
            if not _opt(row.get(key), kind):
                raise RowShapeError(f"{key!r} is not a {kind.__name__}")
        if not all(_num(v) for v in row["timings_s"].values()):
            raise RowShapeError("a timing is not a number")
        m = row["model"]
        if not all(_opt(m.get(k), "num") for k in ("macs", "params", "alpha", "resolution")):
            raise RowShapeError("a model figure is not a number")
        if not _opt((row.get("bench") or {}).get("label"), str) or \
                not _opt((row.get("bench") or {}).get("loadavg_1m"), "num"):
            raise RowShapeError("the bench label or load is malformed")
        if row["status"] == "ok" and not row["artifacts"]:
            raise RowShapeError("no artifacts")
        artifacts = [ArtifactRow.from_json(a) for a in row["artifacts"]]
        return cls(name=row["name"], row_key=row["row_key"], export_key=str(row.get("export_key") or ""),
                   export_dir=row.get("export_dir") or "", status=row["status"], error=row.get("error"),
                   stage=row.get("stage") if isinstance(row.get("stage"), str) else None, node=row.get("node"),
                   timings_s=dict(row["timings_s"]), artifacts=artifacts, model=m,
                   warnings=[str(w) for w in row.get("warnings") or [] if isinstance(w, str)]
                   if isinstance(row.get("warnings"), list) else [],
                   export_reused=row.get("export_reused") if isinstance(row.get("export_reused"), bool) else None,
                   versions=row.get("versions"), bench=row.get("bench"),
                   usage_error=row.get("usage_error") if isinstance(row.get("usage_error"), bool) else None,
                   traceback=row.get("traceback") if isinstance(row.get("traceback"), str) else None)
