"""Typed field checks for the YAML spec: each turns a raw YAML value into a clean one or raises InputError."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from record.errors import InputError, did_you_mean, one_of

Check = Callable[[Any, str], Any]


def _number(value: Any) -> float | None:
    """YAML 1.1 reads `3e-5` (no dot) as a string; accept it as the number a user meant."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(value: Any, path: str) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        if not ok:
            rng = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
            raise InputError(path, "must be an integer " + rng, got=value)
        return value

    return check


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = True) -> Check:
    def check(value: Any, path: str) -> float:
        num = _number(value)
        ok = num is not None and math.isfinite(num)  # NaN fails every comparison below; inf must fail too
        if ok and low is not None:
            ok = num > low if low_open else num >= low
        if ok and high is not None:
            ok = num < high if high_open else num <= high
        if not ok:
            lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
            if low is not None and high is None:
                want = f"> {low:g}" if low_open else f">= {low:g}"
            else:
                want = f"in {lo}, {hi}"
            finite = "finite " if num is not None and not math.isfinite(num) else ""
            raise InputError(path, f"must be a {finite}number " + want, got=value)
        return num

    return check


def optional(inner: Check) -> Check:
    def check(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return check


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(path, "must be true or false", got=value)
    return value


def choice(*options: str) -> Check:
    def check(value: Any, path: str) -> str:
        if value not in options:
            raise InputError(path, "unknown value", got=value,
                             allowed=one_of(value, options))
        return value

    return check


def text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, "must be a non-empty string", got=value)
    return value


def pair_of(inner: Check) -> Check:
    def check(value: Any, path: str) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise InputError(path, "must be a list of two numbers", got=value, allowed="e.g. [0.9, 0.98]")
        return tuple(inner(v, f"{path}[{i}]") for i, v in enumerate(value))

    return check


def mapping(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(path, "must be a mapping of keys to values", got=value)
    return value


def unknown_key_error(key: str, known: list[str] | tuple[str, ...], path: str) -> InputError:
    """An 'unknown key' error that suggests the closest known key (typos are the usual cause)."""
    where = f"{path}.{key}" if path else str(key)
    return InputError(where, "unknown key", got=key,
                      allowed=did_you_mean(key, known) + "known keys: " + ", ".join(known))


Sourced = dict[str, tuple[Any, str]]  # key -> (raw value, YAML path of the mapping it came from)


def merge_layers(layers: list[tuple[str, Any]], errors: list[InputError]) -> Sourced:
    """Merge mappings key by key, later layers winning; each value remembers the path of its layer.

    A layer is (YAML path, mapping or None); a value is replaced whole (a list or a nested mapping is not merged).
    """
    merged: Sourced = {}
    for path, body in layers:
        if body is None:
            continue
        try:
            mapping(body, path)
        except InputError as err:
            errors.append(err)
            continue
        for key, value in body.items():
            merged[key] = (value, path)
    return merged


def check_merged(merged: Sourced, schema: dict[str, Check], errors: list[InputError]) -> dict:
    """Check every merged value against `schema` (errors name the layer it came from); return the clean values."""
    clean = {}
    for key, (value, path) in merged.items():
        if key not in schema:
            errors.append(unknown_key_error(key, list(schema), path))
            continue
        try:
            clean[key] = schema[key](value, f"{path}.{key}" if path else key)
        except InputError as err:
            errors.append(err)
    return clean


def layered(schema: dict[str, Check], layers: list[tuple[str, Any]], errors: list[InputError]) -> dict:
    """One section of a spec: its layers merged in order (see `merge_layers`), then checked once."""
    return check_merged(merge_layers(layers, errors), schema, errors)


def check_section(raw: Any, schema: dict[str, Check], path: str, errors: list[InputError]) -> dict:
    """Check a (partial) mapping against `schema`; collect errors; return the clean values present."""
    if raw is None:
        errors.append(InputError(path, "must be a mapping of keys to values", got=raw))
        return {}
    return layered(schema, [(path, raw)], errors)


def section(schema: dict[str, Check]) -> Check:
    """A nested mapping checked against `schema`, its first problem raised: the clean values present."""

    def check(value: Any, path: str) -> dict:
        errors: list[InputError] = []
        clean = check_section(value, schema, path, errors)
        if errors:
            raise errors[0]
        return clean

    return check


class Axis(tuple):
    """The values of a training setting that the grid expands over (two or more, distinct)."""


def axis(check: Check, list_valued: bool = False) -> Check:
    """A setting, or a list of them (a grid axis), each element through `check` (paths like `x[1]`).

    For a setting whose value is itself a list (`adam_betas`), only a list of lists is an axis.
    """

    def run(value: Any, path: str) -> Any:
        if not isinstance(value, list) or (list_valued and not any(isinstance(v, list) for v in value)):
            return check(value, path)
        if not value:
            raise InputError(path, "an axis needs at least one value", got=value, allowed="e.g. [5e-4, 1e-3]")
        values = tuple(check(v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(set(values)) != len(values):
            raise InputError(path, "duplicate value in an axis", got=value, allowed="list each value once")
        return values[0] if len(values) == 1 else Axis(values)

    return run
