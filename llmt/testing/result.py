"""The result of one test (data, schema-derived, singular or unit) as reported and recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("pass", "warn", "fail", "error", "skipped")


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class

    name: str
    kind: str  # a generic test's name, singular, unit
    origin: str  # properties | schema | singular | unit
    attached: str  # the model (or source) it tests
    where: str  # file:line of its declaration
    status: str = "pass"  # one of STATUSES
    severity: str = "error"
    failures: int = 0
    message: str = ""
    columns: list[str] = field(default_factory=list)  # of the failing-row sample
    sample: list[tuple[Any, ...]] = field(default_factory=list)
    seconds: float = 0.0
    stored: str | None = None  # the table keeping the failing rows (store_failures)

    @property
    def blocking(self) -> bool:
        """An error-severity failure, or a test that could not run: exit code 1, skips downstream."""
        return self.status in ("fail", "error")

    def as_dict(self) -> dict[str, Any]:
        return {
            "unique_id": f"test.{self.name}", "name": self.name, "resource_type": "test", "kind": self.kind,
            "origin": self.origin, "attached": self.attached, "where": self.where, "status": self.status,
            "severity": self.severity, "failures": self.failures, "message": self.message,
            "execution_time": round(self.seconds, 3), "stored_failures": self.stored,
            "sample": [dict(zip(self.columns, row, strict=False)) for row in self.sample],
        }
