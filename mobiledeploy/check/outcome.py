"""One row of a check report and its verdicts (shared by the check kinds and the reports)."""

from __future__ import annotations

from dataclasses import dataclass, field

PASS, FAIL, INCONCLUSIVE, ERROR, SKIPPED = "pass", "fail", "inconclusive", "error", "skipped"
VERDICTS = (PASS, FAIL, INCONCLUSIVE, ERROR, SKIPPED)


@dataclass(frozen=True)
class CheckOutcome:
    """One row of the report: one limit of one artifact."""

    artifact: str  # the budget entry's name
    check: str  # size | top1 | int8_top1_drop | latency_ratio | latency_ms
    limit: float
    op: str  # "<=" or ">=": what must hold for measured vs. limit
    unit: str
    verdict: str
    measured: float | None = None
    low: float | None = None  # confidence interval (latency checks)
    high: float | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.artifact}: {self.check}"

    def to_json(self) -> dict:
        return {"name": self.name, "artifact": self.artifact, "check": self.check, "limit": self.limit,
                "op": self.op, "unit": self.unit, "verdict": self.verdict, "measured": self.measured,
                "interval": [self.low, self.high] if self.low is not None else None,
                "detail": self.detail, **self.extra}
