"""The malformed-input matrix: data files, model, CLI flags and spec shapes. Every case is one `error:` line naming
the field (or file:line) and the fix, exit 2, found by `plan` and by `run` before Ray starts or anything is written.
(More spec cases: tests/test_spec_cli.py BAD_CASES and AXIS_BAD.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tune_jobs.cli import main

GOOD_TSV = "sentence\tlabel\na fine film\t1\na dull film\t0\n"


def _tsv(root: Path, train: str = GOOD_TSV, dev: str = GOOD_TSV) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.tsv").write_text(train)
    (root / "dev.tsv").write_text(dev)
    return root


def _parquet(root: Path, train: dict, dev: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(train), root / "train.parquet")
    pq.write_table(pa.table(dev or {"sentence": ["ok"], "label": [1]}), root / "validation.parquet")
    return root


def _jsonl(root: Path, train: str, dev: str = '{"text": "ok", "y": "pos"}\n{"text": "no", "y": "neg"}\n') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.jsonl").write_text(train)
    (root / "validation.jsonl").write_text(dev)
    return root


REGRESSION_TSV = "sentence\tlabel\na fine film\t4.5\na dull film\t1.0\n"
DATA_CASES = [  # (id, build the dataset dir under tmp, extra data fields, the error line's field: problem)
    ("dir missing", lambda t: t / "nope", {}, "data.dataset: local dataset directory not found"),
    ("no split files", lambda t: (t / "empty").mkdir() or t / "empty", {},
     "data.splits.train: no file for split 'train'"),
    ("eval split missing", lambda t: _tsv(t / "d").joinpath("dev.tsv").unlink() or t / "d", {},
     "data.splits.eval: no file for split 'validation'"),
    ("named eval split missing", lambda t: _tsv(t / "d"), {"splits": {"eval": "test"}},
     "data.splits.eval: no file for split 'test'"),
    ("unknown text column", lambda t: _tsv(t / "d", train="text\tlabel\nx\t1\ny\t0\n"), {},
     "data.text: no column 'sentence' in"),
    ("typo in text column", lambda t: _tsv(t / "d"), {"text": "sentense"}, "did you mean 'sentence'?"),
    ("unknown label column", lambda t: _tsv(t / "d"), {"label": "y"}, "data.label: no column 'y'"),
    ("pair column missing", lambda t: _tsv(t / "d"), {"text": ["sentence", "sentence2"]},
     "data.text: no column 'sentence2'"),
    ("one label only", lambda t: _tsv(t / "d", train="sentence\tlabel\nx\tpos\n"), {},
     "data.label: the train split has 1 distinct label"),
    ("row without tab", lambda t: _tsv(t / "d", train=GOOD_TSV + "no tab here\n"), {},
     "train.tsv:4: malformed row, no value in column 'label'"),
    ("header only", lambda t: _tsv(t / "d", train="sentence\tlabel\n"), {}, "train.tsv: has no rows"),
    ("label out of range", lambda t: _tsv(t / "d", train=GOOD_TSV + "x\t2\n"), {"num_labels": 2},
     "train.tsv:4: label 2 is outside 0..1"),
    ("unseen label", lambda t: _tsv(t / "d", dev=GOOD_TSV + "\nx\t3\n"), {},
     "data.label: {dev}:5: label '3' is not a label of the train split"),
    ("negative label", lambda t: _tsv(t / "d", dev=GOOD_TSV + "x\t-1\n"), {}, "dev.tsv:4: label '-1' is not a label"),
    ("bad dev row", lambda t: _tsv(t / "d", dev="sentence\tlabel\nx\t1\ty\n"), {},
     "dev.tsv:2: malformed row (expected 2 fields, saw 3)"),
    ("regression target not a number", lambda t: _tsv(t / "d", train=REGRESSION_TSV + "x\tn/a\n", dev=REGRESSION_TSV),
     {"task": "regression"}, "data.label: {train}:4: regression target 'n/a' in column 'label' is not a number"),
    ("no header without names", lambda t: _tsv(t / "d"), {"reader": {"header": False}}, "data.reader.column_names"),
    ("parquet lacks label", lambda t: _parquet(t / "p", {"sentence": ["a"], "y": [1]}), {},
     "data.label: no column 'label'"),
    ("parquet empty", lambda t: _parquet(t / "p", {"sentence": pa.array([], pa.string()),
                                                    "label": pa.array([], pa.int64())}), {}, "has no rows"),
    ("parquet label range", lambda t: _parquet(t / "p", {"sentence": ["a", "b"], "label": [0, 5]}), {"num_labels": 2},
     "train.parquet: row 2: label 5 is outside 0..1"),
    ("parquet damaged", lambda t: _parquet(t / "p", {"sentence": ["a"], "label": [1]}).joinpath("train.parquet")
     .write_bytes(b"PAR1 garbage") and t / "p", {}, "not a readable Parquet file"),
    ("jsonl not an object", lambda t: _jsonl(t / "j", "[1, 2]\n"), {"text": "text", "label": "y"},
     "train.jsonl:1: not a JSON object"),
    ("jsonl malformed", lambda t: _jsonl(t / "j", '{"text": "a", "y": "pos"}\n{"text": "b", "y": neg}\n'),
     {"text": "text", "label": "y"}, "train.jsonl: cannot read it as json"),
    ("jsonl unseen string label", lambda t: _jsonl(t / "j", '{"text": "a", "y": "pos"}\n{"text": "b", "y": "neg"}\n',
                                                  '{"text": "c", "y": "meh"}\n'), {"text": "text", "label": "y"},
     "validation.jsonl:1: label 'meh' is not a label of the train split"),
    ("GLUE_DIR lacks the task", lambda t: "glue/qnli", {}, "GLUE_DIR has no folder QNLI or qnli for glue/qnli"),
    ("selection larger than train", lambda t: _tsv(t / "d"), {"selection": {"rows": 10_000_000}},
     "data.selection: holds out 10,000,000 of the train split's 2 rows"),  # was found only once a trial ran
]


def spec_for(tmp_path: Path, dataset: str, model: str = "minilm-l6", extra: str = "", data: dict | None = None) -> Path:
    path = tmp_path / "spec.yaml"
    fields = {"dataset": dataset, "train_limit": 10, **(data or {})}
    path.write_text(f"name: bad\nmodel: {model}\ndata: {json.dumps(fields)}\n"
                    f"scenarios:\n  - {{name: a, layers: all, components: v}}\n{extra}")
    return path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    assert lines[0].startswith("error: ") or lines[0].startswith("lora-sweep")
    return lines[0]


def _needle(needle: str, dataset: Path | str) -> str:
    return needle.format(train=Path(dataset) / "train.tsv", dev=Path(dataset) / "dev.tsv")


@pytest.mark.parametrize("case,build,data,needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_found_by_plan(tmp_path, capsys, case, build, data, needle):
    dataset = build(tmp_path)
    assert main(["plan", str(spec_for(tmp_path, str(dataset), data=data))]) == 2
    assert _needle(needle, dataset) in one_error_line(capsys)


RUN_CASES = ["dir missing", "header only", "unknown text column", "unseen label", "eval split missing",
             "regression target not a number"]


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_data_stops_run_before_ray_prints_or_writes_anything(tmp_path, case):
    build, data, needle = next((b, d, n) for c, b, d, n in DATA_CASES if c == case)
    dataset = build(tmp_path)
    spec = spec_for(tmp_path, str(dataset), data=data)
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "run", str(spec), "--storage", str(store)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and _needle(needle, dataset) in lines[0], out.stderr  # no Ray banner, warning or traceback
    assert not store.exists()


def test_offline_hub_is_one_line_before_ray(tmp_path):
    """A GLUE preset without GLUE_DIR loads from the hub: offline, `run` stops with one line (plan needs no data)."""
    env = {k: v for k, v in os.environ.items() if k != "GLUE_DIR"}
    spec = spec_for(tmp_path, "glue/rte")
    planned = subprocess.run([sys.executable, "-m", "tune_jobs", "plan", str(spec)], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=120)
    assert planned.returncode == 0 and "data glue/rte (train_limit 10), classification (2 labels)" in planned.stdout
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "run", str(spec), "--storage", str(tmp_path / "s")],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
    assert "data.dataset: cannot load from the hub (offline" in lines[0] and "export GLUE_DIR" in lines[0]


MODEL_CASES = [
    ("dir without config", lambda t: (t / "m").mkdir() or t / "m", "model"),
    ("config of unknown family", lambda t: _config_dir(t, {"model_type": "gpt2", "n_layer": 2}), "known model_types"),
    ("corrupt config", lambda t: _config_dir(t, None), "model"),
    ("unknown alias", lambda t: "minilm-l12", "model"),
]


def _config_dir(tmp_path: Path, config: dict | None) -> Path:
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{not json" if config is None else json.dumps(config))
    return out


@pytest.mark.parametrize("case,build,needle", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_is_one_line(tmp_path, capsys, case, build, needle, sst2_dir):
    spec = spec_for(tmp_path, str(sst2_dir), model=str(build(tmp_path)))
    assert main(["plan", str(spec)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: model") and needle in line


CLI_CASES = [  # argv after the spec (None: argv replaces everything), needle
    (["--profile", "fastest"], "--profile"),
    (None, "invalid choice"),  # unknown subcommand
    (["--max-concurrent", "0"], "--max-concurrent"),
    (["--max-concurrent", "two"], "invalid int value"),
    (["--resume"], "--resume"),  # nothing to resume
]


@pytest.mark.parametrize("argv,needle", CLI_CASES, ids=[str(c[0]) for c in CLI_CASES])
def test_bad_run_flags_are_one_line_and_start_nothing(tmp_path, capsys, sst2_dir, argv, needle):
    spec = spec_for(tmp_path, str(sst2_dir))
    store = tmp_path / "store"
    full = ["launch", str(spec)] if argv is None else ["run", str(spec), "--storage", str(store), *argv]
    try:
        code = main(full)
    except SystemExit as exit_:  # argparse's own errors exit from inside parse_args
        code = exit_.code
    assert code == 2
    line = one_error_line(capsys)
    assert needle in line
    assert not store.exists()


TRIAL_CASES = [
    (["--scenario", "zz"], "--scenario"),
    (["--scenario", "a", "--r", "3"], "--r"),
    (["--scenario", "a", "--repeat", "7"], "--repeat"),
    (["--scenario", "a", "--resume-from", "/nonexistent"], "--resume-from"),
    (["--scenario", "a", "--axis", "learning_rat=1"], "--axis"),
]


@pytest.mark.parametrize("argv,needle", TRIAL_CASES, ids=[c[1] for c in TRIAL_CASES])
def test_bad_trial_flags_are_one_line(tmp_path, capsys, sst2_dir, argv, needle):
    assert main(["trial", str(spec_for(tmp_path, str(sst2_dir))), *argv]) == 2
    assert needle in one_error_line(capsys)


SPEC_SHAPES = [
    ("empty file", "", "top level must be a mapping"),
    ("a list", "- a\n- b\n", "top level must be a mapping"),
    ("scenarios not a list", "name: x\nmodel: minilm-l6\nscenarios: {a: 1}\n", "scenarios"),
    ("scenario without name", "name: x\nmodel: minilm-l6\nscenarios:\n  - {layers: all, components: v}\n", "name"),
    ("duplicate scenario", "name: x\nmodel: minilm-l6\nscenarios:\n  - {name: a, layers: all, components: v}\n"
                           "  - {name: a, layers: all, components: q}\n", "duplicate scenario name"),
    ("tab-indented yaml", "name: x\n\tmodel: minilm-l6\n", "malformed YAML"),
    ("unknown GLUE task", "name: x\nmodel: minilm-l6\ndata: {dataset: glue/sst5}\nscenarios:\n  - {name: a, "
                          "layers: all, components: v}\n", "data.dataset: unknown GLUE task"),
]
DATA_FIELDS = [  # data fields (YAML flow) over a good local dataset, the error
    ("num_labels 1", "num_labels: 1", "data.num_labels: a classification task needs at least 2 labels"),
    ("max_length tiny", "max_length: 2", "data.max_length"),
    ("three text columns", "text: [a, b, c]", "data.text: must be one column or a pair of two"),
    ("metric of another task", "metric: mcc, task: regression", "data.metric: not a regression metric"),
    ("unknown metric", "metric: bleu", "data.metric: unknown value"),
    ("regression with label names", "task: regression, labels: [a, b]", "data.labels: a regression task has no label"),
    ("regression with 3 outputs", "dataset: glue/stsb, num_labels: 3", "data.num_labels: a regression task has one"),
    ("labels and num_labels disagree", "labels: [a, b], num_labels: 3", "data.num_labels: differs from the 2 names"),
    ("duplicate label names", "labels: [a, a]", "data.labels: must be a list of two or more distinct"),
    ("splits not a mapping", "splits: dev", "data.splits: must be a mapping"),
    ("unknown splits key", "splits: {test: x}", "data.splits.test: unknown key"),
    ("bad quoting", "reader: {quoting: all}", "data.reader.quoting: unknown value"),
    ("bad delimiter", "reader: {delimiter: ab}", "data.reader.delimiter: must be one character"),
]


@pytest.mark.parametrize("case,fields,needle", DATA_FIELDS, ids=[c[0] for c in DATA_FIELDS])
def test_bad_data_fields(tmp_path, capsys, case, fields, needle, sst2_dir):
    import yaml

    assert main(["plan", str(spec_for(tmp_path, str(sst2_dir), data=yaml.safe_load("{" + fields + "}")))]) == 2
    assert needle in one_error_line(capsys)


@pytest.mark.parametrize("case,text,needle", SPEC_SHAPES, ids=[c[0] for c in SPEC_SHAPES])
def test_malformed_spec_shapes(tmp_path, capsys, case, text, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert main(["plan", str(path)]) == 2
    assert needle in one_error_line(capsys)


def test_trial_on_an_offline_hub_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GLUE_DIR")
    assert main(["trial", str(spec_for(tmp_path, "glue/mrpc")), "--scenario", "a"]) == 2
    assert "data.dataset: cannot load from the hub (offline" in one_error_line(capsys)


# ---- More bad input, each found before Ray, torch or any write: files where folders go, damaged files, servers
# nothing answers, non-finite numbers, misplaced settings, typos.

MINILM = "name: bad\nmodel: minilm-l6\ndata: {dataset: glue/sst2, train_limit: 10}\n"
SCEN_A = "scenarios:\n  - {name: a, layers: all, components: v}\n"


def _run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_jobs", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


def _one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stdout[-2000:] + out.stderr[-3000:]
    return lines[0]


def test_storage_that_is_a_file_is_one_line_before_ray(tmp_path):
    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A)
    (tmp_path / "afile").write_text("not a folder")
    line = _one_line(_run(["run", "spec.yaml", "--storage", "afile"], tmp_path))
    assert line.startswith("error: --storage: is a file, not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "spec.yaml"]


def _analyzed(tmp_path: Path) -> Path:
    from tests.synthetic import write_study

    return write_study(tmp_path / "an", [{"scenario": "a", "mean": 0.8}, {"scenario": "b", "mean": 0.82}])


OUT_COMMANDS = {  # subcommand -> argv before --out, given the analyze output folder and the experiment
    "analyze": lambda an, exp: ["analyze", str(exp)],
    "report": lambda an, exp: ["report", str(an)],
    "export": lambda an, exp: ["export", str(exp), "--trial", "t1"],
}


@pytest.mark.parametrize("command", list(OUT_COMMANDS))
@pytest.mark.parametrize("under", [False, True], ids=["file", "under a file"])
def test_out_that_is_a_file_is_one_line(tmp_path, capsys, command, under):
    an, exp = _analyzed(tmp_path), _experiment(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" if under else tmp_path / "afile"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main([*OUT_COMMANDS[command](an, exp), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: --out: " + ("lies under the file" if under else "is a file, not a directory"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["trials.parquet", "epochs.parquet", "predictions.parquet"])
def test_report_on_a_truncated_parquet_file_is_one_line(tmp_path, capsys, name):
    an = _analyzed(tmp_path)
    if name == "predictions.parquet":
        pq.write_table(pa.table({"experiment": ["study"], "trial_id": ["x"], "example": [0], "label": [1],
                                 "prediction": [1]}), an / name)
    data = (an / name).read_bytes()
    (an / name).write_bytes(data[:len(data) // 2])
    assert main(["report", str(an), "--out", str(tmp_path / "rep")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {an / name}: not a readable Parquet file, truncated or damaged")
    assert f"re-run `lora-sweep analyze EXPERIMENT --out {an}`" in line
    assert not (tmp_path / "rep").exists()


def _silent_port() -> tuple[object, int]:
    """A local port whose connections get no answer: a listener with a full backlog drops new handshakes."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    return (listener, fillers), port


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("argv", [["run", "spec.yaml", "--storage", "st", "--address"],
                                  ["plan", "spec.yaml", "--calibrate", "--address"]], ids=["run", "plan"])
@pytest.mark.parametrize("kind", ["refused", "silent", "ray client"])
def test_address_nothing_answers_is_one_line_within_the_connect_timeout(tmp_path, argv, kind):
    import time

    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A)
    keep, port = _silent_port() if kind == "silent" else (None, _closed_port())
    address = f"ray://127.0.0.1:{port}" if kind == "ray client" else f"127.0.0.1:{port}"
    started = time.monotonic()
    line = _one_line(_run([*argv, address], tmp_path, {"LORA_SWEEP_CONNECT_TIMEOUT": "1", "RAY_ADDRESS": ""}))
    assert time.monotonic() - started < 30
    assert line.startswith(f"error: --address: nothing answers at 127.0.0.1:{port}")
    assert ("no answer within 1 s" in line) == (kind == "silent"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
    del keep


@pytest.mark.parametrize("address,needle", [("127.0.0.1", "no port"), ("host:port", "the port is not a number")])
def test_malformed_address_is_one_line(tmp_path, capsys, address, needle):
    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A)
    assert main(["plan", str(tmp_path / "spec.yaml"), "--calibrate", "--address", address]) == 2
    assert f"error: --address: {needle}" in one_error_line(capsys)


def test_connect_timeout_setting_is_checked(monkeypatch):
    from record.errors import InputError
    from tune_jobs.sweep.reach import connect_timeout

    assert connect_timeout() == 15
    for bad in ("x", "0", "inf", "nan"):
        monkeypatch.setenv("LORA_SWEEP_CONNECT_TIMEOUT", bad)
        with pytest.raises(InputError, match="LORA_SWEEP_CONNECT_TIMEOUT: must be a finite number of seconds > 0"):
            connect_timeout()


CLI_FINITE = [  # argv (SPEC and AN are replaced), the error line's start
    (["report", "AN", "--margin", "inf"], "error: --margin: must be a finite number > 0"),
    (["report", "AN", "--margin", "nan"], "error: --margin: must be a finite number > 0"),
    (["report", "AN", "--price-per-hour", "inf"], "error: --price-per-hour: must be a finite number > 0"),
    (["plan", "SPEC", "--calibrate", "--price-per-hour", "inf"], "error: --price-per-hour: must be a finite number"),
    (["plan", "SPEC", "--calibrate", "--price-per-hour", "nan"], "error: --price-per-hour: must be a finite number"),
]


@pytest.mark.parametrize("argv,needle", CLI_FINITE, ids=[" ".join(c[0][2:]) for c in CLI_FINITE])
def test_non_finite_numbers_are_refused_like_nan(tmp_path, capsys, argv, needle):
    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A)
    an = _analyzed(tmp_path)
    swap = {"SPEC": str(tmp_path / "spec.yaml"), "AN": str(an)}
    assert main([swap.get(a, a) for a in argv] + (["--out", str(tmp_path / "rep")] if argv[0] == "report" else [])) == 2
    assert one_error_line(capsys).startswith(needle)
    assert not (tmp_path / "rep").exists()


SELECTING = ("name: bad\nmodel: minilm-l6\ndata: {dataset: glue/sst2, selection: {fraction: 0.05}}\n"
             "train: {epochs: 3, learning_rate: [1.0e-3, 2.0e-3]}\n" + SCEN_A)
SPEC_MORE = [  # (id, spec text, --profile, the one error line's start)
    ("loraplus ratio inf", MINILM + SCEN_A + "lora: {method: loraplus, loraplus_lr_ratio: .inf}\n", None,
     "error: lora.loraplus_lr_ratio: must be a finite number > 0 (got inf)"),
    ("loraplus ratio nan", MINILM + SCEN_A + "lora: {method: loraplus, loraplus_lr_ratio: .nan}\n", None,
     "error: lora.loraplus_lr_ratio: must be a finite number > 0"),
    ("early stop reduction inf", SELECTING + "select: {axes: [learning_rate], early_stop: {grace_epochs: 1, "
     "reduction: .inf}}\n", None, "error: select.early_stop.reduction: must be a finite number > 1 (got inf)"),
    ("learning rate inf", MINILM + SCEN_A + "train: {learning_rate: .inf}\n", None,
     "error: train.learning_rate: must be a finite number > 0"),
    ("alpha inf", MINILM + SCEN_A + "lora: {alpha: .inf}\n", None, "error: lora.alpha: alpha must be a finite number"),
    ("alpha nan", MINILM + SCEN_A + "lora: {alpha: .nan}\n", None, "error: lora.alpha: alpha must be a finite number"),
    ("gpu inf", MINILM + SCEN_A + "resources: {gpu: .inf}\n", None, "error: resources.gpu: must be a finite number"),
    ("inherited bad value named where it is held", MINILM + SCEN_A + "profiles:\n  base: {train: {learning_rate: "
     "-1}}\n  child: {extends: base, train: {epochs: 2}}\n", "child",
     "error: profiles.base.train.learning_rate: must be a number > 0 (got -1)"),
    ("inherited list element", MINILM + SCEN_A + "profiles:\n  base: {train: {adam_betas: [0.9, 2]}}\n  mid: "
     "{extends: base}\n  child: {extends: mid, train: {epochs: 2}}\n", "child",
     "error: profiles.base.train.adam_betas[1]: must be a number in [0, 1)"),
    ("own bad value still named at the profile", MINILM + SCEN_A + "profiles:\n  base: {train: {epochs: 2}}\n"
     "  child: {extends: base, train: {epochs: 0}}\n", "child", "error: profiles.child.train.epochs: must be an"),
    ("overridden base value is no error", MINILM + SCEN_A + "profiles:\n  base: {train: {epochs: 0}}\n"
     "  child: {extends: base, train: {epochs: 2, warmup_ratio: 3}}\n", "child",
     "error: profiles.child.train.warmup_ratio"),
    ("empty bucket", MINILM.replace("glue/sst2", "s3:///sst2") + SCEN_A, None,
     "error: data.dataset: the bucket name is missing"),
    ("empty bucket of a model", MINILM.replace("minilm-l6", "s3:///models/m") + SCEN_A, None,
     "error: model: the bucket name is missing"),
    ("method typo", MINILM + SCEN_A + "lora: {method: lorapuls}\n", None, "did you mean 'loraplus'?"),
    ("component typo", MINILM + SCEN_A.replace("components: v", "components: v+upp"), None, "did you mean 'up'?"),
    ("rank component typo", MINILM + SCEN_A + "lora: {ranks: [{vv: 4}]}\n", None, "did you mean 'v'?"),
    ("profile typo", MINILM + SCEN_A, "dmeo", "error: --profile: unknown profile (got 'dmeo'); did you mean 'demo'?"),
    ("extends typo", MINILM + SCEN_A + "profiles:\n  child: {extends: papr}\n", "child",
     "error: profiles.child.extends: unknown profile (got 'papr'); did you mean 'paper'?"),
    ("data metric typo", MINILM.replace("train_limit: 10", "metric: accuracyy") + SCEN_A, None,
     "did you mean 'accuracy'?"),
    ("GLUE task typo", MINILM.replace("glue/sst2", "glue/sst3") + SCEN_A, None, "did you mean 'glue/sst2'?"),
]


@pytest.mark.parametrize("case,text,profile,needle", SPEC_MORE, ids=[c[0] for c in SPEC_MORE])
def test_more_spec_problems_are_one_line(tmp_path, capsys, case, text, profile, needle):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert main(["plan", str(path), *(["--profile", profile] if profile else [])]) == 2
    line = one_error_line(capsys)
    assert line.startswith(needle) if needle.startswith("error:") else needle in line


def test_storage_with_an_empty_bucket_is_one_line(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A)
    assert main(["run", str(tmp_path / "spec.yaml"), "--storage", "s3:///sweeps"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: --storage: the bucket name is missing") and "(got 's3:///sweeps')" in line
    assert main(["analyze", "s3:///sweeps/x", "--out", str(tmp_path / "an")]) == 2
    assert one_error_line(capsys).startswith("error: s3:///sweeps/x: the bucket name is missing")
    assert not (tmp_path / "an").exists()


def test_trial_and_report_names_get_did_you_mean(tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text(MINILM + SCEN_A.replace("name: a", "name: upper"))
    assert main(["trial", str(tmp_path / "spec.yaml"), "--scenario", "uper"]) == 2
    assert "did you mean 'upper'?" in one_error_line(capsys)
    assert main(["report", str(_analyzed(tmp_path)), "--out", str(tmp_path / "rep"), "--metric", "val_acuracy"]) == 2
    assert "did you mean 'val_accuracy'?" in one_error_line(capsys)


def _experiment(tmp_path: Path, result: str | None = None) -> Path:
    """A Ray Tune experiment folder as Tune leaves it, reduced to what `export` reads: one finished trial `t1`
    with a checkpoint and a result.json (`result`: its text; default two whole epochs)."""
    exp = tmp_path / "exp"
    trial = exp / "t1"
    (trial / "checkpoint_000001").mkdir(parents=True, exist_ok=True)
    config = {"trial_name": "t1", "scenario": "a", "epochs": 2, "r": 8, "repeat": 0}
    rows = [{"epoch": e, "training_iteration": e, "val_accuracy": 0.8} for e in (1, 2)]
    (trial / "result.json").write_text(result if result is not None else "".join(json.dumps(r) + "\n" for r in rows))
    state = {"trial_data": [[json.dumps({"trial_id": "abc", "status": "TERMINATED", "relative_logdir": "t1",
                                         "config": config}),
                             json.dumps({"num_failures": 0, "last_result": rows[-1]})]]}
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    return exp


def test_export_of_a_trial_whose_result_json_is_cut_names_the_line(tmp_path, capsys):
    whole = "".join(json.dumps({"epoch": e, "training_iteration": e, "val_accuracy": 0.8}) + "\n" for e in (1, 2))
    exp = _experiment(tmp_path, whole[:len(whole) - 20])  # the second line cut mid-way
    assert main(["export", str(exp), "--trial", "t1", "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("error: trial t1: finished, but its result.json is unreadable: ")
    assert f"{exp / 't1' / 'result.json'}:2: corrupt or truncated at this line" in line
    assert not (tmp_path / "out").exists()


def test_version():
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "--version"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    from importlib import metadata

    assert out.returncode == 0 and out.stdout.strip() == f"lora-sweep {metadata.version('lora-sweep')}"
