"""The malformed-input matrix: data files, model, CLI flags and spec shapes. Every case is one `error:` line naming
the field (or file:line) and the fix, exit 2, found by `plan` and by `run` before Ray starts or anything is written.
(More spec cases: tests/test_spec_cli.py BAD_CASES and AXIS_BAD.)"""

from __future__ import annotations

import json
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


DATA_CASES = [  # (id, build the dataset dir under tmp, needle in the error line)
    ("dir missing", lambda t: t / "nope", "local dataset directory not found"),
    ("no split files", lambda t: (t / "empty").mkdir() or t / "empty", "no train.tsv + dev.tsv"),
    ("bad header", lambda t: _tsv(t / "d", train="text\tlabel\nx\t1\n"), "train.tsv:1: header must be"),
    ("non-integer label", lambda t: _tsv(t / "d", train="sentence\tlabel\nx\tpos\n"), "train.tsv:2: malformed row"),
    ("row without tab", lambda t: _tsv(t / "d", train=GOOD_TSV + "no tab here\n"), "train.tsv:4: malformed row"),
    ("header only", lambda t: _tsv(t / "d", train="sentence\tlabel\n"), "train.tsv: has a header but no rows"),
    ("label out of range", lambda t: _tsv(t / "d", train=GOOD_TSV + "x\t2\n"), "train.tsv:4: label 2 is outside 0..1"),
    ("negative label", lambda t: _tsv(t / "d", dev=GOOD_TSV + "x\t-1\n"), "dev.tsv:4: label -1 is outside"),
    ("bad dev row", lambda t: _tsv(t / "d", dev="sentence\tlabel\nx\t1\ty\n"), "dev.tsv:2: malformed row"),
    ("parquet lacks label", lambda t: _parquet(t / "p", {"sentence": ["a"], "y": [1]}), "lacks columns ['label']"),
    ("parquet empty", lambda t: _parquet(t / "p", {"sentence": pa.array([], pa.string()),
                                                    "label": pa.array([], pa.int64())}), "has no rows"),
    ("parquet label range", lambda t: _parquet(t / "p", {"sentence": ["a", "b"], "label": [0, 5]}), "label 5 is outside"),
    ("parquet string labels", lambda t: _parquet(t / "p", {"sentence": ["a"], "label": ["pos"]}), "must hold integers"),
    ("parquet damaged", lambda t: _parquet(t / "p", {"sentence": ["a"], "label": [1]}).joinpath("train.parquet")
     .write_bytes(b"PAR1 garbage") and t / "p", "not a readable Parquet file"),
]


def spec_for(tmp_path: Path, dataset: str, model: str = "minilm-l6", extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: bad\nmodel: {model}\ndata: {{dataset: {json.dumps(dataset)}, train_limit: 10}}\n"
                    f"scenarios:\n  - {{name: a, layers: all, components: v}}\n{extra}")
    return path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1, captured
    assert lines[0].startswith("error: ") or lines[0].startswith("lora-sweep")
    return lines[0]


@pytest.mark.parametrize("case,build,needle", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_found_by_plan(tmp_path, capsys, case, build, needle):
    spec = spec_for(tmp_path, str(build(tmp_path)))
    assert main(["plan", str(spec)]) == 2
    line = one_error_line(capsys)
    assert "data.dataset" in line and needle in line


@pytest.mark.parametrize("case", ["header only", "label out of range", "row without tab", "dir missing"])
def test_bad_data_stops_run_before_ray_prints_or_writes_anything(tmp_path, case):
    build, needle = next((b, n) for c, b, n in DATA_CASES if c == case)
    spec = spec_for(tmp_path, str(build(tmp_path)))
    store = tmp_path / "store"
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "run", str(spec), "--storage", str(store)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr  # no Ray banner, warning or traceback before it
    assert not store.exists()


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
    ("num_labels 1", None, "data.num_labels"),
    ("max_length tiny", None, "data.max_length"),
]


@pytest.mark.parametrize("case,text,needle", SPEC_SHAPES, ids=[c[0] for c in SPEC_SHAPES])
def test_malformed_spec_shapes(tmp_path, capsys, case, text, needle, sst2_dir):
    if text is None:
        field = {"num_labels 1": "num_labels: 1", "max_length tiny": "max_length: 2"}[case]
        path = spec_for(tmp_path, str(sst2_dir))
        path.write_text(path.read_text().replace("train_limit: 10", f"train_limit: 10, {field}"))
    else:
        path = tmp_path / "spec.yaml"
        path.write_text(text)
    assert main(["plan", str(path)]) == 2
    assert needle in one_error_line(capsys)

