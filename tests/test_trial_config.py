"""`tune_jobs.study.spec.TrialConfig` is a plain dataclass (what IDEs and type checkers read) that lists the trial
record's declaration, `record.fields.FIELDS`, field by field: the same names in the same order, the same defaults, and a
Python type that holds the field's Arrow type. A field added on one side only fails here, saying what to add."""

from __future__ import annotations

import pickle
import types
import typing
from dataclasses import MISSING, FrozenInstanceError, fields, make_dataclass, replace
from dataclasses import field as dc_field

import pyarrow as pa
import pytest

from record import fields as record
from record.errors import InputError
from tune_jobs.study.spec import TrialConfig

SCALARS = {pa.string(): str, pa.int32(): int, pa.int64(): int, pa.float64(): float, pa.bool_(): bool}


def hint_text(fl: record.Field) -> str:
    """The annotation a field's TrialConfig line should carry, e.g. `list[int]`, `str | None`."""
    if fl.mapping:
        base = "dict[str, Any]"
    elif pa.types.is_list(fl.arrow):
        base = f"list[{SCALARS[fl.arrow.value_type].__name__}]"
    else:
        base = SCALARS[fl.arrow].__name__
    return f"{base} | None" if fl.nullable else base


def line_text(fl: record.Field) -> str:
    """The TrialConfig line for a record field, e.g. `looks: int = 1`."""
    default = "" if fl.default is record.NO_DEFAULT else f" = {fl.default!r}"
    return f"{fl.name}: {hint_text(fl)}{default}"


def _members(hint) -> tuple:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def _holds_scalar(hint, arrow: pa.DataType) -> bool:
    return hint is SCALARS.get(arrow)  # exactly: bool is an int, yet an int32 field is no bool


def _holds(hint, fl: record.Field) -> bool:
    """Whether values of `hint` (one member of a union, not None) are what the Arrow type stores."""
    origin = typing.get_origin(hint) or hint
    if fl.mapping:
        return origin is dict
    if pa.types.is_list(fl.arrow):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return origin in (list, tuple) and bool(items) and all(_holds_scalar(a, fl.arrow.value_type) for a in items)
    return _holds_scalar(hint, fl.arrow)


def type_problem(fl: record.Field, hint) -> str | None:
    members = _members(hint)
    values = [m for m in members if m is not type(None)]
    if (type(None) in members) != fl.nullable:
        return (f"`{fl.name}` is {'nullable' if fl.nullable else 'not nullable'} in record.fields but its TrialConfig "
                f"type is {hint}: make it `{hint_text(fl)}`")
    if not values or not all(_holds(m, fl) for m in values):
        return f"`{fl.name}` is {fl.arrow} in record.fields, but TrialConfig types it {hint}: make it `{hint_text(fl)}`"
    return None


def disagreements(cls, declared: tuple[record.Field, ...]) -> list[str]:
    """Every way the dataclass `cls` and the declaration `declared` differ, each with what to change."""
    ours = {f.name: f for f in fields(cls)}
    theirs = {f.name: f for f in declared}
    problems = []
    for i, fl in enumerate(declared):
        if fl.name not in ours:
            where = f"after `{declared[i - 1].name}`" if i else "first"
            problems.append(f"record.fields has `{fl.name}` but TrialConfig does not: add `{line_text(fl)}` to "
                            f"TrialConfig ({where})")
    for name in ours:
        if name not in theirs:
            problems.append(f"TrialConfig has `{name}` but record.fields.FIELDS does not: add a Field(\"{name}\", "
                            "<Arrow type>, <role>, ...) to record/fields.py (in TrialConfig's order), or remove it "
                            "from TrialConfig")
    common = [n for n in theirs if n in ours]
    if common != [n for n in ours if n in theirs]:
        problems.append(f"TrialConfig lists its fields in another order than record.fields.FIELDS: {common}")
    hints = typing.get_type_hints(cls)
    for name in common:
        fl, ours_fl = theirs[name], ours[name]
        problem = type_problem(fl, hints[name])
        if problem:
            problems.append(problem)
        expected = MISSING if fl.default is record.NO_DEFAULT else fl.default
        got = ours_fl.default_factory() if ours_fl.default_factory is not MISSING else ours_fl.default
        if got is MISSING and expected is not MISSING or got is not MISSING and expected is MISSING \
                or got != expected:
            what = "no default" if expected is MISSING else f"default {expected!r}"
            problems.append(f"`{name}`: record.fields gives {what}, TrialConfig "
                            f"{'none' if got is MISSING else repr(got)}: make its line `{line_text(fl)}`")
    return problems


def test_trial_config_lists_the_record_fields_field_by_field():
    assert [f.name for f in fields(TrialConfig)] == list(record.NAMES)
    assert disagreements(TrialConfig, record.FIELDS) == []


def test_every_field_type_and_default_is_checked():
    """The check compares every field (so a plain dataclass cannot drift from the declaration unseen)."""
    hints = typing.get_type_hints(TrialConfig)
    assert set(hints) == set(record.NAMES)
    assert all(type_problem(fl, hints[fl.name]) is None for fl in record.FIELDS)
    assert hints["layers"] == list[int] and hints["baseline"] == str | None and hints["seed"] is int
    assert hints["gradient_checkpointing"] is bool and hints["learning_rate"] is float
    assert fields(TrialConfig)[record.NAMES.index("epochs")].default == record.BY_NAME["epochs"].default


def _variant(drop: str | None = None, add: tuple | None = None, retype: tuple | None = None,
             default: tuple | None = None):
    """TrialConfig with one field dropped, added, retyped or given another default (a class made for the check)."""
    specs = []
    hints = typing.get_type_hints(TrialConfig)
    for f in fields(TrialConfig):
        if f.name == drop:
            continue
        hint = retype[1] if retype and retype[0] == f.name else hints[f.name]
        value = default[1] if default and default[0] == f.name else f.default
        specs.append((f.name, hint, dc_field(default=value)))
    if add:
        specs.append(add)
    return make_dataclass("Variant", specs, kw_only=True)


def test_a_field_on_one_side_only_fails_saying_what_to_add():
    problems = disagreements(_variant(drop="looks"), record.FIELDS)
    assert problems == ["record.fields has `looks` but TrialConfig does not: add `looks: int = 1` to TrialConfig "
                        "(after `seed`)"]
    problems = disagreements(_variant(drop="layers"), record.FIELDS)
    assert "add `layers: list[int]` to TrialConfig (after `baseline`)" in problems[0]
    problems = disagreements(_variant(add=("new_knob", int, dc_field(default=0))), record.FIELDS)
    assert len(problems) == 1 and "TrialConfig has `new_knob`" in problems[0] and "record/fields.py" in problems[0]
    declared = record.FIELDS + (record.Field("new_knob", pa.int32(), record.TRAINING, default=4),)
    assert disagreements(TrialConfig, declared) == [
        "record.fields has `new_knob` but TrialConfig does not: add `new_knob: int = 4` to TrialConfig "
        "(after `precision`)"]


@pytest.mark.parametrize(("name", "hint", "message"), [
    ("r", int, "`r` is nullable in record.fields"),  # None lost
    ("lora_dropout", float | None, "`lora_dropout` is not nullable"),
    ("repeat", bool, "make it `int`"),
    ("learning_rate", int, "make it `float`"),
    ("layers", list[str], "make it `list[int]`"),
    ("components", str, "make it `list[str]`"),
    ("rank_pattern", str, "make it `dict[str, Any]`"),
])
def test_a_type_the_arrow_type_does_not_hold_fails(name, hint, message):
    problems = disagreements(_variant(retype=(name, hint)), record.FIELDS)
    assert len(problems) == 1 and message in problems[0], problems


def test_another_default_fails():
    problems = disagreements(_variant(default=("epochs", 5)), record.FIELDS)
    assert problems == ["`epochs`: record.fields gives default 3, TrialConfig 5: make its line `epochs: int = 3`"]
    problems = disagreements(_variant(default=("model", "x")), record.FIELDS)
    assert problems == ["`model`: record.fields gives no default, TrialConfig 'x': make its line `model: str`"]


# ---------------------------------------------------------------- the dataclass behaves as the made one did


def _config() -> dict:
    values = {"str": "x", "int": 1, "float": 0.5, "bool": False}
    out = {}
    for fl in record.FIELDS:
        if fl.default is not record.NO_DEFAULT:
            out[fl.name] = list(fl.default) if isinstance(fl.default, tuple) else fl.default
        elif fl.mapping:
            out[fl.name] = {}
        elif pa.types.is_list(fl.arrow):
            out[fl.name] = [values[SCALARS[fl.arrow.value_type].__name__]]
        else:
            out[fl.name] = values[SCALARS[fl.arrow].__name__]
    return out | {"baseline": None, "primary_metric": "val_accuracy", "task": "classification"}


def test_from_dict_round_trips_ignores_extra_keys_and_refuses_missing_ones():
    config = _config()
    tc = TrialConfig.from_dict({**config, "extra": 1})
    assert tc.to_dict() == config and TrialConfig.from_dict(tc.to_dict()) == tc
    assert pickle.loads(pickle.dumps(tc)) == tc and type(tc).__module__ == "tune_jobs.study.spec"
    with pytest.raises(FrozenInstanceError):
        tc.epochs = 4  # type: ignore[misc]
    assert replace(tc, epochs=4).epochs == 4
    with pytest.raises(InputError, match="missing keys"):
        TrialConfig.from_dict({k: v for k, v in config.items() if k not in ("epochs", "model")})
    with pytest.raises(TypeError):
        TrialConfig(study="s")  # fields without a default must be given, by name
    with pytest.raises(TypeError):
        TrialConfig(*config.values())


def test_from_dict_fills_what_old_configs_predate():
    old = {k: v for k, v in _config().items() if k not in ("method", "looks", "stage", "resources")}
    tc = TrialConfig.from_dict(old)
    assert (tc.method, tc.looks, tc.stage, tc.resources) == ("lora", 1, None, None)
    assert TrialConfig.from_dict({**old, "baseline": "full"}).method is None
