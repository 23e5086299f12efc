"""Profiles (`--profile demo|paper|...`, built in or the spec's own) and the YAML reading and merging they need."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from record.errors import InputError, InputErrors, did_you_mean

from . import checks as f

PROFILES_FILE = Path(__file__).parents[1] / "profiles.yaml"  # beside experiments/, the specs that use it


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
    """The profile's mapping (built-in, with the spec's `profiles.<name>` merged over it, and over the profile it
    `extends`, if any) and its YAML path."""
    if name is None:
        return {}, ""
    profiles = all_profiles(raw)
    if name not in profiles:
        raise InputErrors([InputError("--profile", "unknown profile", got=name,
                                    allowed=did_you_mean(name, profiles) + "known profiles: "
                                    + ", ".join(sorted(profiles)))])
    path = f"profiles.{name}"
    return f.check_section(_extended(profiles, name), {k: _any for k in keys}, path, errors), path


def all_profiles(raw: dict) -> dict[str, Any]:
    """The built-in profiles with the spec's own `profiles:` merged over them (a spec may extend a built-in one)."""
    profiles = builtin_profiles()
    own = raw.get("profiles")
    for pname, body in (own.items() if isinstance(own, dict) else ()):
        profiles[pname] = _deep_merge(profiles.get(pname, {}), body if isinstance(body, dict) else {})
    return profiles


def _extended(profiles: dict[str, Any], name: str, seen: tuple[str, ...] = ()) -> Any:
    """A profile with `extends: OTHER` resolved: OTHER's settings (itself resolved), this profile's merged over them."""
    body = profiles[name]
    if not isinstance(body, dict) or "extends" not in body:
        return body
    base, rest = body["extends"], {k: v for k, v in body.items() if k != "extends"}
    if not isinstance(base, str) or base not in profiles:
        raise InputErrors([InputError(f"profiles.{name}.extends", "unknown profile", got=base,
                                      allowed=did_you_mean(base, profiles) + "known profiles: "
                                      + ", ".join(sorted(profiles)))])
    if base == name or base in seen:
        raise InputErrors([InputError(f"profiles.{name}.extends", "profiles extend each other in a circle",
                                      got=" -> ".join((*seen, name, base)), allowed="remove one `extends`")])
    parent = _extended(profiles, base, (*seen, name))
    return _deep_merge(parent if isinstance(parent, dict) else {}, rest)


def _holders(profiles: dict[str, Any], name: str) -> dict[tuple, str]:
    """Key path (e.g. ('train', 'learning_rate')) -> the profile that holds the value `_extended` resolves for
    `name`: the profile itself, or one it extends (directly or further up)."""
    chain, seen = [name], {name}
    while isinstance(profiles.get(chain[-1]), dict) and isinstance(profiles[chain[-1]].get("extends"), str) \
            and profiles[chain[-1]]["extends"] in profiles and profiles[chain[-1]]["extends"] not in seen:
        chain.append(profiles[chain[-1]]["extends"])
        seen.add(chain[-1])
    out: dict[tuple, str] = {}

    def walk(body: Any, prefix: tuple, holder: str, nested: bool) -> None:
        for key, value in body.items():
            if not nested and key == "extends":
                continue
            path = (*prefix, str(key))
            if isinstance(value, dict):
                walk(value, path, holder, True)
            else:  # replaces whatever the extended profile had below this key
                for old in [k for k in out if k[:len(path)] == path]:
                    del out[old]
                out[path] = holder

    for pname in reversed(chain):  # the farthest base first; each profile's own values win, as `_extended` merges
        if isinstance(profiles[pname], dict):
            walk(profiles[pname], (), pname, False)
    return out


def at_holding_profile(errors: list[InputError], raw: dict, name: str | None) -> list[InputError]:
    """Errors in a value `--profile NAME` inherited through `extends:` renamed to the profile that holds the value
    (`profiles.base.train.learning_rate`, not `profiles.NAME.train...`): that is where the fix goes."""
    if name is None or not errors:
        return errors
    import re

    profiles = all_profiles(raw)
    if name not in profiles:
        return errors
    holders, prefix = _holders(profiles, name), f"profiles.{name}."
    out = []
    for err in errors:
        if err.field.startswith(prefix):
            parts = tuple(re.sub(r"\[\d+\]$", "", p) for p in err.field[len(prefix):].split("."))
            holder = next((holders[parts[:k]] for k in range(len(parts), 0, -1) if parts[:k] in holders), name)
            if holder != name:
                err = InputError(f"profiles.{holder}.{err.field[len(prefix):]}", err.problem, got=err.got,
                                 allowed=err.allowed)
        out.append(err)
    return out


def profile_scenarios(prof: dict, ppath: str, names: set, errors: list[InputError]) -> dict[str, dict]:
    """A profile's per-scenario overrides (`scenarios: {NAME: {train: ..., layers: ..., components: ...}}`), each
    naming a spec scenario (layers and components: the same rule on a model with another layout, e.g. ModernBERT's
    fused qkv)."""
    over = f.check_section(prof["scenarios"], {n: _any for n in sorted(names)}, f"{ppath}.scenarios", errors) \
        if "scenarios" in prof else {}
    return {n: f.check_section(body, {"train": _any, "layers": _any, "components": _any}, f"{ppath}.scenarios.{n}",
                               errors) for n, body in over.items()}
