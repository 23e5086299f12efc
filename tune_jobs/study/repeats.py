"""Seeds per cell: a fixed count or adaptive repeats (`repeats:` of a spec, a scenario, a profile or a stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from record.errors import InputError

from . import checks as f


@dataclass(frozen=True)
class Repeats:
    """Seeds per cell: `min` always, then one more at a time up to `max` while the cell's 95 % t half-width of the
    study's metric is above `until_halfwidth`, or (`until_decided`) while its comparison with the best group is
    open (analysis.sequential). A fixed count n is Repeats(n, n)."""

    min: int = 1
    max: int = 1
    until_halfwidth: float | None = None
    until_decided: bool = False
    reference: str | None = None  # until decided: the scenario every cell is compared with (None: the best)

    @property
    def adaptive(self) -> bool:
        return (self.until_halfwidth is not None or self.until_decided) and self.max > self.min

    @property
    def looks(self) -> int:
        """Looks of a sequential design (after min seeds, then after each added one); 1 for any other."""
        return self.max - self.min + 1 if self.until_decided else 1

    def describe(self) -> str:
        """`min 3, max 10, until decided` as a plan or a log line says it."""
        until = "until decided" if self.until_decided else f"until_halfwidth {self.until_halfwidth:g}"
        until += f" against {self.reference}" if self.reference else ""
        return f"min {self.min}, max {self.max}, {until}"


REPEATS_KEYS = ("min", "max", "until_halfwidth", "until", "reference")
UNTIL = ("decided",)


def check_repeats(value: Any, path: str) -> Repeats:
    """`repeats`: an integer (fixed seeds per cell), `{min, max, until_halfwidth}` (adaptive to a precision) or
    `{min, max, until: decided[, reference: SCENARIO]}` (adaptive to a verdict against the best group, or the
    reference scenario's)."""
    adaptive = "{min: 3, max: 10, until_halfwidth: 0.004} or {min: 3, max: 10, until: decided}"
    if not isinstance(value, dict):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return Repeats(value, value)
        raise InputError(path, "must be an integer >= 1 or a mapping", got=value, allowed=f"e.g. 5, or {adaptive}")
    for key in value:
        if key not in REPEATS_KEYS:
            raise f.unknown_key_error(key, REPEATS_KEYS, path)
    if "reference" in value and value.get("until") != "decided":
        raise InputError(f"{path}.reference", "only with until: decided (the group comparisons are made against)",
                        got=value["reference"], allowed="add until: decided, or drop reference")
    if "until" in value and "until_halfwidth" in value:
        raise InputError(f"{path}.until", "give either until or until_halfwidth, not both", allowed=adaptive)
    missing = [k for k in ("min", "max") if k not in value] or \
        ([] if "until" in value or "until_halfwidth" in value else ["until"])
    if missing:
        raise InputError(f"{path}.{missing[0]}", "missing",
                        allowed=f"adaptive repeats need min, max and a rule, e.g. {adaptive}")
    low = f.integer(1)(value["min"], f"{path}.min")
    high = f.integer(1)(value["max"], f"{path}.max")
    if low > high:
        raise InputError(f"{path}.min", f"must be <= {path}.max ({high})", got=low, allowed="raise max or lower min")
    if "until" in value:
        if value["until"] not in UNTIL:
            raise InputError(f"{path}.until", "unknown rule", got=value["until"],
                            allowed="decided (more seeds while a comparison with the best group is open)")
        if low < 2:
            raise InputError(f"{path}.min", "must be >= 2 with until: decided (a comparison needs a spread)",
                            got=low, allowed="e.g. min: 3")
        reference = value.get("reference")
        if reference is not None and (not isinstance(reference, str) or not reference.strip()):
            raise InputError(f"{path}.reference", "must be a scenario name", got=reference)
        return Repeats(low, high, until_decided=True, reference=reference)
    return Repeats(low, high, f.number(0, None, low_open=True)(value["until_halfwidth"], f"{path}.until_halfwidth"))


__all__ = ["REPEATS_KEYS", "Repeats", "check_repeats"]
