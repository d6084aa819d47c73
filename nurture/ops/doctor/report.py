"""What ``nurture doctor`` reports: one :class:`Check` per thing it looked at."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Check:
    """One thing ``doctor`` looked at."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def worst(checks: list[Check]) -> Status:
    """``fail`` if any check failed, else ``warn`` if any warned, else ``ok``."""
    statuses = {check.status for check in checks}
    if "fail" in statuses:
        return "fail"
    return "warn" if "warn" in statuses else "ok"


def unreadable_configuration(checks: list[Check]) -> Check | None:
    """The failed configuration check when the settings could not be read at all
    (then it is the only check: nothing else can be looked at)."""
    if len(checks) == 1 and checks[0].name == "configuration" and checks[0].status == "fail":
        return checks[0]
    return None


def first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
