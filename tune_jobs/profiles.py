"""Profiles (`--profile demo|paper|...`, built in or the spec's own) and the YAML reading and merging they need."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from record.errors import InputError, InputErrors

from . import checks as f

PROFILES_FILE = Path(__file__).parent / "profiles.yaml"


def read_yaml(path: str | Path, what: str = "spec") -> dict:
    """Read a YAML mapping; InputError for a missing file, malformed YAML or a non-mapping document."""
    path = Path(path)
    if not path.is_file():
        raise InputError(what, "file not found", got=str(path), allowed="pass the path of a YAML experiment spec")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(what, f"malformed YAML at {where}: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(what, "top level must be a mapping of keys", got=type(data).__name__, allowed=f"see {path}")
    return data


def builtin_profiles() -> dict[str, dict]:
    return read_yaml(PROFILES_FILE, "profiles")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _any(value: Any, path: str) -> Any:
    return value


def chosen_profile(raw: dict, name: str | None, keys: tuple[str, ...], errors: list[InputError]) -> tuple[dict, str]:
    """The profile's mapping (built-in, with the spec's `profiles.<name>` merged over it) and its YAML path."""
    if name is None:
        return {}, ""
    profiles = builtin_profiles()
    own = raw.get("profiles")
    for pname, body in (own.items() if isinstance(own, dict) else ()):
        profiles[pname] = _deep_merge(profiles.get(pname, {}), body if isinstance(body, dict) else {})
    if name not in profiles:
        raise InputErrors([InputError("--profile", "unknown profile", got=name,
                                    allowed="known profiles: " + ", ".join(sorted(profiles)))])
    path = f"profiles.{name}"
    return f.check_section(profiles[name], {k: _any for k in keys}, path, errors), path


def profile_scenarios(prof: dict, ppath: str, names: set, errors: list[InputError]) -> dict[str, dict]:
    """A profile's per-scenario overrides (`scenarios: {NAME: {train: ...}}`), each naming a spec scenario."""
    over = f.check_section(prof["scenarios"], {n: _any for n in sorted(names)}, f"{ppath}.scenarios", errors) \
        if "scenarios" in prof else {}
    return {n: f.check_section(body, {"train": _any}, f"{ppath}.scenarios.{n}", errors) for n, body in over.items()}
