"""Seeds per cell: a fixed count or adaptive repeats (`repeats:` of a spec, a scenario, a profile or a stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from record.errors import InputError

from . import checks as f


@dataclass(frozen=True)
class Repeats:
    """Seeds per cell: `min` always, then one more at a time while the cell's 95 % t half-width of the study's
    metric is above `until_halfwidth`, up to `max`. A fixed count n is Repeats(n, n)."""

    min: int = 1
    max: int = 1
    until_halfwidth: float | None = None

    @property
    def adaptive(self) -> bool:
        return self.until_halfwidth is not None and self.max > self.min


REPEATS_KEYS = ("min", "max", "until_halfwidth")


def check_repeats(value: Any, path: str) -> Repeats:
    """`repeats`: an integer (fixed seeds per cell) or `{min, max, until_halfwidth}` (adaptive)."""
    adaptive = "{min: 3, max: 10, until_halfwidth: 0.004}"
    if not isinstance(value, dict):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return Repeats(value, value)
        raise InputError(path, "must be an integer >= 1 or a mapping", got=value, allowed=f"e.g. 5, or {adaptive}")
    for key in value:
        if key not in REPEATS_KEYS:
            raise f.unknown_key_error(key, REPEATS_KEYS, path)
    missing = [k for k in REPEATS_KEYS if k not in value]
    if missing:
        raise InputError(f"{path}.{missing[0]}", "missing",
                        allowed=f"adaptive repeats need min, max and until_halfwidth, e.g. {adaptive}")
    low = f.integer(1)(value["min"], f"{path}.min")
    high = f.integer(1)(value["max"], f"{path}.max")
    if low > high:
        raise InputError(f"{path}.min", f"must be <= {path}.max ({high})", got=low, allowed="raise max or lower min")
    return Repeats(low, high, f.number(0, None, low_open=True)(value["until_halfwidth"], f"{path}.until_halfwidth"))


__all__ = ["REPEATS_KEYS", "Repeats", "check_repeats"]
