"""How a trial ended has one owner (record/outcome.py): the rule from Ray's status, the last report and the config,
its table of cases, the Parquet `status` values it names, and no Ray status spelled anywhere else. The exit codes and
the one guarded runner every command uses (record/errors.py)."""

from __future__ import annotations

import argparse
import ast

import pytest

from record.errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TRIALS_FAILED,
    InputError,
    InputErrors,
    run_guarded,
)
from record.fields import CONFIRM, TUNE
from record.outcome import (
    COMPLETED,
    DIVERGED,
    ERRORED,
    FINISHED,
    OUTCOMES,
    PENDING,
    RUNNING,
    STATUS_VALUES,
    STOPPED,
    UNKNOWN,
    column_status,
    outcome,
)
from tests.conftest import REPO

LAST = {"epoch": 3, "val_accuracy": 0.9}  # the last of 3 epochs
SHORT = {"epoch": 1, "val_accuracy": 0.8}  # 1 of 3 epochs
BROKE = {"epoch": 1, "diverged": True, "diverged_reason": "train loss nan at epoch 1 step 3"}
TUNING = {"epochs": 3, "stage": TUNE}
CONFIRMING = {"epochs": 3, "stage": CONFIRM}
PLAIN = {"epochs": 3}  # a study without `select:`

# (Ray's status, last report, config, complete) -> outcome
TABLE = [
    ("TERMINATED", LAST, TUNING, True, FINISHED),
    ("TERMINATED", LAST, PLAIN, True, FINISHED),
    ("TERMINATED", SHORT, TUNING, True, STOPPED),  # ASHA ended a tuning-stage candidate
    ("TERMINATED", SHORT, TUNING, False, FINISHED),  # result.json cut: damage (analyze flags it), not a stop
    ("TERMINATED", SHORT, CONFIRMING, True, FINISHED),  # nothing stops a confirm trial early
    ("TERMINATED", SHORT, PLAIN, True, FINISHED),
    ("TERMINATED", SHORT, {"stage": TUNE}, True, FINISHED),  # no epoch count to compare with
    ("TERMINATED", {"val_accuracy": 0.8}, TUNING, True, FINISHED),  # no epoch in the report
    ("TERMINATED", SHORT, None, True, FINISHED),
    ("TERMINATED", None, TUNING, True, FINISHED),
    ("TERMINATED", {}, PLAIN, True, FINISHED),
    ("TERMINATED", BROKE, TUNING, True, DIVERGED),  # a diverged report is never a stop
    ("TERMINATED", BROKE, PLAIN, True, DIVERGED),
    ("TERMINATED", BROKE, PLAIN, False, DIVERGED),
    ("ERROR", LAST, PLAIN, True, ERRORED),
    ("ERROR", BROKE, PLAIN, True, ERRORED),  # an error wins over the report
    ("ERROR", SHORT, TUNING, True, ERRORED),
    ("ERROR", None, None, True, ERRORED),
    ("RUNNING", SHORT, TUNING, True, RUNNING),  # not ended: whatever its last report says
    ("RUNNING", BROKE, PLAIN, True, RUNNING),
    ("PENDING", None, PLAIN, True, PENDING),
    ("PAUSED", SHORT, TUNING, True, PENDING),  # waiting to go on
    (None, None, None, True, PENDING),
    ("UNKNOWN", None, PLAIN, True, PENDING),
]


@pytest.mark.parametrize("status,last,config,complete,expected", TABLE)
def test_the_outcome_rule(status, last, config, complete, expected):
    assert outcome(status, last, config, complete=complete) == expected


def test_every_outcome_is_reached_and_the_words_stay_those_users_know():
    assert {row[-1] for row in TABLE} == set(OUTCOMES)
    # the sweep's summary (`1 DIVERGED, 1 TERMINATED`) and trials.parquet keep Ray's words where Ray has one
    assert (FINISHED, ERRORED, RUNNING, PENDING, STOPPED, DIVERGED) == \
        ("TERMINATED", "ERROR", "RUNNING", "PENDING", "STOPPED", "DIVERGED")
    assert set(COMPLETED) == {FINISHED, STOPPED, DIVERGED}


@pytest.mark.parametrize("status,ended,column", [
    ("TERMINATED", FINISHED, "TERMINATED"),
    ("TERMINATED", STOPPED, "STOPPED"),
    ("TERMINATED", DIVERGED, "TERMINATED"),  # its `diverged` column says so; the column's values predate DIVERGED
    ("ERROR", ERRORED, "ERROR"),
    ("PAUSED", PENDING, "PAUSED"),
    ("RUNNING", RUNNING, "RUNNING"),
    (None, PENDING, UNKNOWN),
])
def test_the_parquet_status_column_keeps_its_values(status, ended, column):
    assert column_status(status, ended) == column and column in STATUS_VALUES


def test_the_trials_parquet_row_uses_the_rule(tmp_path):
    from analysis.aggregate import trial_row
    from analysis.load import TrialRecord

    def row(status, results, config, problem=None):
        return trial_row(TrialRecord("e", "t", str(tmp_path), status, {"trial_name": "x", **config}, results,
                                     problem=problem))

    tuned = row("TERMINATED", [SHORT], TUNING)
    assert tuned["status"] == "STOPPED" and tuned["stopped_at_epoch"] == 1
    assert row("TERMINATED", [SHORT], TUNING, problem="result.json:2: cut")["status"] == "TERMINATED"
    assert row("TERMINATED", [SHORT], CONFIRMING)["status"] == "TERMINATED"
    broke = row("TERMINATED", [BROKE], PLAIN)
    assert broke["status"] == "TERMINATED" and broke["diverged"] and broke["stopped_at_epoch"] is None


RAY_STATUSES = {"TERMINATED", "ERROR", "RUNNING", "PENDING", "PAUSED"}


def _exported_names(tree: ast.AST) -> set[int]:
    """ids of the string nodes in `__all__ = [...]`: names, not statuses (analysis.sequential exports PENDING)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            out |= {id(n) for n in ast.walk(node.value) if isinstance(n, ast.Constant)}
    return out


def test_no_ray_status_is_spelled_outside_record():
    found = []
    for pkg in ("lora_ext", "tune_jobs", "analysis"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = _exported_names(tree)
            found += [f"{path.relative_to(REPO)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
                      if isinstance(n, ast.Constant) and n.value in RAY_STATUSES and id(n) not in names]
    assert found == [], "use record.outcome's constants and its outcome():\n" + "\n".join(found)


def test_run_guarded_is_one_line_and_an_exit_code(capsys):
    args = argparse.Namespace()
    assert run_guarded(lambda a: None, args) == EXIT_OK
    assert run_guarded(lambda a: EXIT_TRIALS_FAILED, args) == EXIT_TRIALS_FAILED == 1

    def bad(_):
        raise InputError("--metric", "not a metric column", got="val_acc")

    assert run_guarded(bad, args) == EXIT_INPUT == 2
    assert capsys.readouterr().err == "error: --metric: not a metric column (got 'val_acc')\n"

    def several(_):
        raise InputErrors([InputError("a", "x"), InputError("b", "y")])

    assert run_guarded(several, args) == EXIT_INPUT
    assert capsys.readouterr().err == "error: a: x\nerror: b: y\n"

    def unwritable(_):
        raise PermissionError(13, "Permission denied", "/out/report.html")

    assert run_guarded(unwritable, args) == EXIT_INPUT
    assert capsys.readouterr().err == "error: [Errno 13] Permission denied: '/out/report.html'\n"

    def interrupted(_):
        raise KeyboardInterrupt

    assert run_guarded(interrupted, args) == EXIT_INTERRUPTED == 130
    with pytest.raises(InputError):
        run_guarded(bad, argparse.Namespace(debug=True))  # --debug: the traceback


def test_every_command_uses_the_one_runner_and_named_exit_codes():
    """No command prints its own `error:` line for bad input, nor returns a bare exit code (a command: `main` or
    a `cmd_*` function)."""
    found = []
    for pkg in ("tune_jobs", "analysis"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text()
            for lineno, line in enumerate(text.splitlines(), start=1):
                code = line.split("#")[0]
                if "return EXIT_INPUT" in code or "def run_guarded" in code or "sys.exit(1" in code:
                    found.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
            for fn in ast.walk(ast.parse(text)):
                if isinstance(fn, ast.FunctionDef) and (fn.name == "main" or fn.name.startswith("cmd_")):
                    found += [f"{path.relative_to(REPO)}:{r.lineno}: return {r.value.value}" for r in ast.walk(fn)
                              if isinstance(r, ast.Return) and isinstance(r.value, ast.Constant)
                              and isinstance(r.value.value, int)]
    assert found == []
