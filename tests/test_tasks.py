"""Tasks beyond SST-2: GLUE presets on the real files, column mapping, readers, label ids, pairs, metrics,
regression."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from record.errors import InputError, InputErrors
from record.metrics import higher_is_better
from tests.conftest import EXPERIMENTS, GLUE_DIR, tiny_spec
from tune_jobs.cli import main
from tune_jobs.data.readers import resolve_source
from tune_jobs.data.splits import _fingerprint, check_data, load_splits, tokenized_splits
from tune_jobs.study.data_section import DataConfig, Reader, Splits
from tune_jobs.study.grid import select_trial
from tune_jobs.study.spec import load_study
from tune_jobs.train.loop import run_trial
from tune_jobs.train.model import load_model, load_tokenizer
from tune_jobs.train.task_metrics import compute

SCEN = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"


def _sha256s(source_md: Path) -> dict[str, str]:
    """The `<hash>  <file>` lines of a SOURCE.md."""
    return {m[2]: m[1] for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", source_md.read_text(), re.M)}


# ---------------------------------------------------------------- presets on the real GLUE files


@pytest.mark.parametrize("task,counts", [
    ("rte", {"train": (2490, {0: 1249, 1: 1241}), "eval": (277, {0: 146, 1: 131})}),
    ("mrpc", {"train": (3668, {0: 1194, 1: 2474}), "eval": (408, {0: 129, 1: 279})}),
    ("cola", {"train": (8551, {0: 2528, 1: 6023}), "eval": (1043, {0: 322, 1: 721})}),
    ("sst2", {"train": (67349, {0: 29780, 1: 37569}), "eval": (872, {0: 428, 1: 444})}),
])
def test_presets_read_the_files_as_shipped(task, counts):
    """SOURCE.md's counts per label, read through the preset alone from the files byte for byte as shipped."""
    folder = GLUE_DIR / task
    for name, digest in _sha256s(folder / "SOURCE.md").items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name  # nothing converted
    splits = load_splits(DataConfig(dataset=f"glue/{task}"))
    for role in ("train", "eval"):
        ds = getattr(splits, role)
        n, per_label = counts[role]
        assert len(ds) == n and dict(zip(*np.unique(ds["labels"], return_counts=True))) == per_label
    assert splits.label_names == DataConfig(dataset=f"glue/{task}").labels  # the hub's id order


def test_mrpc_bom_header_and_bare_quotes():
    """MRPC's TSV: a byte-order mark before `Quality`, fields that begin with a bare quote (text, not quoting)."""
    train = load_splits(DataConfig(dataset="glue/mrpc")).train
    first = (GLUE_DIR / "mrpc" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1].split("\t")
    assert train.column_names == ["sentence1", "sentence2", "labels"]
    assert (train[0]["sentence1"], train[0]["sentence2"], train[0]["labels"]) == (first[3], first[4], int(first[0]))
    quoted = [s for s in train["sentence1"] if s.startswith('"')]
    assert quoted and all(s.count('"') >= 1 for s in quoted)  # kept as text


def test_cola_without_header():
    cola = load_splits(DataConfig(dataset="glue/cola"))
    first = (GLUE_DIR / "cola" / "train.tsv").read_text().splitlines()[0].split("\t")
    assert cola.train.column_names == ["sentence", "labels"] and cola.train[0]["sentence"] == first[3]
    assert cola.label_names == ("unacceptable", "acceptable")


def test_glue_dir_folder_names_and_cache_keys(tmp_path, monkeypatch):
    """GLUE's `SST-2` or the lowercase `sst2`; two GLUE folders never share a tokenized-cache entry."""
    from transformers import AutoTokenizer

    from lora_ext import model_location

    rows = "sentence\tlabel\na fine film \t1\na dull film \t0\n"
    for root, folder in (("a", "SST-2"), ("b", "sst2")):
        (tmp_path / root / folder).mkdir(parents=True)
        for name in ("train.tsv", "dev.tsv"):
            (tmp_path / root / folder / name).write_text(rows)
    data = DataConfig(dataset="glue/sst2")
    tok = AutoTokenizer.from_pretrained(model_location("minilm-l6"))
    keys = []
    for root in ("a", "b"):
        monkeypatch.setenv("GLUE_DIR", str(tmp_path / root))
        assert len(load_splits(data).train) == 2
        keys.append(_fingerprint(resolve_source(data), data, tok))
    assert keys[0] != keys[1]
    monkeypatch.delenv("GLUE_DIR")
    assert resolve_source(data).hub == ("nyu-mll/glue", "sst2")  # no GLUE_DIR: the hub


def test_glue_tsv_layouts_rename_to_hub_columns(tmp_path, monkeypatch):
    """GLUE's own TSVs of tasks not in ../shared/data: STS-B (score, regression) and MNLI (string labels,
    dev_matched / dev_mismatched files), renamed to the hub's columns."""
    stsb = tmp_path / "STS-B"
    stsb.mkdir()
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\tA man plays.\tA man is playing.\t{s}\n"
    for name in ("train.tsv", "dev.tsv"):
        (stsb / name).write_text(head + "".join(row.format(i=i, s=f"{i / 2:.3f}") for i in range(6)))
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label\n"
    labels = ["neutral", "contradiction", "entailment"]
    for name, extra in (("train.tsv", ""), ("dev_matched.tsv", "m"), ("dev_mismatched.tsv", "mm")):
        (mnli / name).write_text(head + "".join(f"{i}\t1\t1\tfiction\tP{extra}{i}\tH{i}\t{lab}\n"
                                                for i, lab in enumerate(labels)))
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    sts = load_splits(DataConfig(dataset="glue/stsb"))
    assert sts.label_names is None and sts.train["labels"] == [i / 2 for i in range(6)]
    assert sts.train.column_names == ["sentence1", "sentence2", "labels"]
    for dataset, extra in (("glue/mnli", "m"), ("glue/mnli-mm", "mm")):
        nli = load_splits(DataConfig(dataset=dataset))
        assert nli.label_names == ("entailment", "neutral", "contradiction")  # the hub's ids
        assert nli.train["labels"] == [1, 2, 0] and nli.eval["premise"][0] == f"P{extra}0"


# ---------------------------------------------------------------- column mapping, readers and labels


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def jsonl_dataset(root: Path) -> Path:
    """A format the presets do not use: JSON Lines, a pair of texts, three string labels."""
    root.mkdir(parents=True, exist_ok=True)
    words = {"pos": "great fun", "neg": "dull and slow", "meh": "fine I guess"}
    rows = [{"q": f"review {i}", "a": words[lab] + f" {i}", "stars": lab}
            for i, lab in enumerate(["pos", "neg", "meh"] * 20)]
    _jsonl(root / "train.jsonl", rows)
    _jsonl(root / "dev.jsonl", rows[:12])
    return root


def test_jsonl_with_string_labels_by_naming_columns(tmp_path):
    data = DataConfig(dataset=str(jsonl_dataset(tmp_path / "j")), text=("q", "a"), label="stars")
    checked = check_data(data)
    assert checked.labels == ("meh", "neg", "pos") and checked.num_labels == 3  # sorted names -> ids 0, 1, 2
    splits = load_splits(checked)
    assert splits.train["labels"][:3] == [2, 1, 0] and len(splits.eval) == 12  # dev.jsonl is the eval split
    given = check_data(DataConfig(dataset=data.dataset, text=data.text, label="stars", labels=("neg", "meh", "pos")))
    assert load_splits(given).train["labels"][:3] == [2, 0, 1]  # data.labels fixes the id order


def test_jsonl_trial_end_to_end(tmp_path, tiny_bert_dir, capsys):
    """`lora-sweep trial` on a dataset the presets never saw: name its columns, and it trains and reports."""
    root = jsonl_dataset(tmp_path / "j")
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, data={"dataset": str(root), "text": ["q", "a"], "label": "stars",
                                                          "splits": {"eval": "dev"}})
    assert main(["plan", str(spec)]) == 0
    assert "classification (3 labels), metric val_accuracy" in capsys.readouterr().out
    assert main(["trial", str(spec), "--scenario", "vup", "--epochs", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["val_examples"] == 12 and {"val_accuracy", "val_f1", "val_mcc"} <= set(line)


def test_csv_with_quotes_and_reader_options(tmp_path):
    """CSV quoting (a comma inside quotes), a semicolon file without a header: reader options, not conversions."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "train.csv").write_text('text,label\n"fine, really",yes\nbad,no\n"a ""quoted"" word",yes\n')
    (tmp_path / "c" / "validation.csv").write_text("text,label\nok,no\n")
    csv = load_splits(DataConfig(dataset=str(tmp_path / "c"), text=("text",)))
    assert csv.train["text"] == ["fine, really", "bad", 'a "quoted" word'] and csv.label_names == ("no", "yes")
    (tmp_path / "s").mkdir()
    for name in ("train.csv", "validation.csv"):
        (tmp_path / "s" / name).write_text("1;a good one\n0;a bad one\n")
    semi = load_splits(DataConfig(dataset=str(tmp_path / "s"), text=("t",), label="y",
                                  reader=Reader(delimiter=";", header=False, column_names=("y", "t"))))
    assert semi.train["t"] == ["a good one", "a bad one"] and semi.train["labels"] == [1, 0]


def test_label_ids_and_errors():
    from tune_jobs.data.splits import label_vocabulary

    def where(i):
        return f"f:{i + 2}"

    assert label_vocabulary(["1", "0", "1"], None, None, where) == {"0": 0, "1": 1}
    assert label_vocabulary(["10", "9", "2"], None, None, where) == {"2": 0, "9": 1, "10": 2}  # numeric order
    assert label_vocabulary(["0", "1"], ("neg", "pos"), None, where) == {"0": 0, "1": 1}  # ids of the names
    assert label_vocabulary(["pos", "neg"], ("neg", "pos"), None, where) == {"neg": 0, "pos": 1}
    assert label_vocabulary(["0", "1"], None, 3, where) == {"0": 0, "1": 1, "2": 2}  # a class train lacks
    with pytest.raises(InputError, match=r"data.label: f:3: label 'meh' is not one of data.labels"):
        label_vocabulary(["pos", "meh"], ("neg", "pos"), None, where)
    with pytest.raises(InputError, match=r"data.num_labels: the train split has 3 labels"):
        label_vocabulary(["a", "b", "c"], None, 2, where)


def test_eval_label_train_lacks_is_fine_when_listed(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\tx\nb\ty\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nc\tz\n")
    with pytest.raises(InputError, match=r"dev.tsv:2: label 'z' is not a label of the train split"):
        check_data(DataConfig(dataset=str(tmp_path)))
    listed = check_data(DataConfig(dataset=str(tmp_path), labels=("x", "y", "z")))
    assert listed.num_labels == 3 and load_splits(listed).eval["labels"] == [2]


def test_model_head_from_the_labels(tmp_path, tiny_bert_dir):
    cfg = select_trial(load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN)), "vup")
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok, ("meh", "neg", "pos"))
    assert model.config.num_labels == 3 and model.config.id2label == {0: "meh", 1: "neg", 2: "pos"}
    assert model.config.label2id == {"meh": 0, "neg": 1, "pos": 2}
    regression = load_model(type(cfg)(**{**cfg.to_dict(), "task": "regression"}), tok, None)
    assert regression.config.num_labels == 1 and regression.config.problem_type == "regression"


# ---------------------------------------------------------------- pairs


def test_pairs_use_the_pair_interface(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    data = DataConfig(dataset="glue/rte", max_length=48)
    splits, names = tokenized_splits(data, tok)
    raw = load_splits(data).train
    assert names == ("entailment", "not_entailment")
    for i in range(20):
        row = splits["train"][i]
        want = tok(raw[i]["sentence1"], raw[i]["sentence2"], truncation="longest_first", max_length=48)
        assert row["input_ids"] == want["input_ids"] and row["length"] == len(row["input_ids"]) <= 48
        assert row["input_ids"].count(tok.sep_token_id) == 2 and set(row["token_type_ids"]) == {0, 1}
        sep = row["input_ids"].index(tok.sep_token_id)  # [CLS] s1 [SEP] s2 [SEP]: segment 0, then segment 1
        assert set(row["token_type_ids"][:sep + 1]) == {0} and set(row["token_type_ids"][sep + 1:]) == {1}
    long = next(i for i in range(len(raw)) if len(tok(raw[i]["sentence1"], raw[i]["sentence2"])["input_ids"]) > 48)
    ids = splits["train"][long]["input_ids"]
    sep = ids.index(tok.sep_token_id)
    assert len(ids) == 48 and 0 < sep < 47  # truncated from the longer side, both texts kept
    lengths = np.asarray(splits["train"]["length"])
    pair = np.asarray([len(t) for t in tok(raw["sentence1"][:200], raw["sentence2"][:200])["input_ids"]])
    single = np.asarray([len(t) for t in tok(raw["sentence1"][:200], truncation=True, max_length=48)["input_ids"]])
    assert (lengths[:200] == np.minimum(pair, 48)).all()  # batches are grouped by the pair's length,
    assert (lengths[:200] > single).mean() > 0.5  # not the first text's


# ---------------------------------------------------------------- metrics


def test_metrics_match_scikit_learn_and_scipy():
    from scipy import stats
    from sklearn import metrics

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(200, 2)), rng.integers(0, 2, 200)
    pred = logits.argmax(-1)
    got = compute("classification", logits, labels)
    assert got == {"accuracy": metrics.accuracy_score(labels, pred), "f1": metrics.f1_score(labels, pred),
                   "mcc": metrics.matthews_corrcoef(labels, pred)}
    assert compute("classification", np.eye(2)[[1, 1, 0, 0]], np.array([1, 0, 0, 0])) == pytest.approx(
        {"accuracy": 0.75, "f1": 2 / 3, "mcc": 1 / 3 ** 0.5})  # by hand: tp 1, fp 1, tn 2, fn 0
    three = compute("classification", rng.normal(size=(90, 3)), rng.integers(0, 3, 90))
    assert 0 <= three["f1"] <= 1  # macro F1 for more than two labels
    out, target = rng.normal(size=(50, 1)), rng.normal(size=50)
    reg = compute("regression", out, target)
    assert reg["pearson"] == pytest.approx(stats.pearsonr(out[:, 0], target).statistic)
    assert reg["spearman"] == pytest.approx(stats.spearmanr(out[:, 0], target).statistic)
    assert reg["mse"] == pytest.approx(np.mean((out[:, 0] - target) ** 2))
    assert compute("regression", np.ones((5, 1)), np.arange(5.0))["pearson"] is None  # undefined, not NaN
    assert not higher_is_better("val_mse") and not higher_is_better("val_loss") and higher_is_better("val_mcc")


# ---------------------------------------------------------------- trials on the presets, regression


@pytest.mark.parametrize("task,metric", [("rte", "val_accuracy"), ("mrpc", "val_f1"), ("cola", "val_mcc")])
def test_trial_on_each_preset_reports_its_metric_every_epoch(tmp_path, tiny_bert_dir, capsys, task, metric):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, data={"dataset": f"glue/{task}", "max_length": 64})
    assert main(["trial", str(spec), "--scenario", "vup"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and all(m[metric] is not None for m in lines)
    assert lines[0]["val_examples"] == {"rte": 277, "mrpc": 408, "cola": 1043}[task]
    trial = select_trial(load_study(spec), "vup")
    assert trial.primary_metric == metric and trial.dataset == f"glue/{task}"


def stsb_like(root: Path, n: int = 120) -> Path:
    """A small STS-B-like file: two sentences and a 0-5 similarity score."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["cat", "dog", "runs", "sleeps", "a", "the", "big", "small"]
    lines = ["s1\ts2\tscore"]
    for _ in range(n):
        a = " ".join(rng.choice(words, 5))
        b = " ".join(rng.choice(words, 5))
        lines.append(f"{a}\t{b}\t{5 * len(set(a.split()) & set(b.split())) / 5:.2f}")
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    (root / "dev.tsv").write_text("\n".join(lines[:41]) + "\n")
    return root


def test_regression_trial(tmp_path, tiny_bert_dir):
    # fp32: a tiny random model's outputs are nearly constant, and bf16 rounding can make them exactly constant,
    # which leaves Pearson undefined (None); the metric plumbing is what is tested here
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, data={
        "dataset": str(stsb_like(tmp_path / "sts")), "text": ["s1", "s2"], "label": "score", "task": "regression"},
        train={"precision": "fp32"})
    study = load_study(spec)
    assert (study.data.metric, study.data.num_labels, study.data.labels) == ("pearson", 1, None)
    trial = select_trial(study, "vup")
    assert trial.primary_metric == "val_pearson" and trial.task == "regression"
    history = run_trial(trial.to_dict())
    assert [m["epoch"] for m in history] == [1, 2]
    for m in history:
        assert {"val_mse", "val_pearson", "val_spearman"} <= set(m) and "val_accuracy" not in m
        assert m["val_mse"] == pytest.approx(m["val_loss"], rel=1e-4)  # MSE is the loss
        assert -1 <= m["val_pearson"] <= 1 and m["val_examples"] == 40


def test_diverged_regression_reports_its_metrics_as_none(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, train={"learning_rate": 1e12}, data={
        "dataset": str(stsb_like(tmp_path / "sts")), "text": ["s1", "s2"], "label": "score", "task": "regression"})
    last = run_trial(select_trial(load_study(spec), "vup").to_dict())[-1]
    assert last["diverged"] is True and last["val_pearson"] is None and "val_accuracy" not in last


# ---------------------------------------------------------------- specs and the study files


def test_presets_resolve_in_the_spec():
    study = load_study(EXPERIMENTS / "final_cola.yaml", "demo")
    assert (study.data.dataset, study.data.text, study.data.metric, study.data.num_labels) == \
        ("glue/cola", ("sentence",), "mcc", 2)
    assert DataConfig(dataset="glue/mnli").splits.eval == "validation_matched"
    assert DataConfig(dataset="glue/mnli-mm").splits.eval == "validation_mismatched"
    assert DataConfig(dataset="glue/stsb").task == "regression"
    override = DataConfig(dataset="glue/mrpc", metric="accuracy")
    assert override.metric == "accuracy" and override.text == ("sentence1", "sentence2")


def test_trial_data_flag_takes_the_presets_columns():
    spec = EXPERIMENTS / "final_rte.yaml"
    study = load_study(spec, "demo", {"dataset": "glue/cola"})
    assert (study.data.dataset, study.data.text, study.data.metric) == ("glue/cola", ("sentence",), "mcc")
    with pytest.raises(InputErrors, match="unknown GLUE task"):
        load_study(spec, "demo", {"dataset": "glue/wnli"})


@pytest.mark.parametrize("name", ["final_rte.yaml", "final_cola.yaml"])
def test_new_studies_plan_offline(name, capsys):
    assert main(["plan", str(EXPERIMENTS / name), "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "35 trials, 7 distinct configurations" in out and "roberta-base" in out
    body = yaml.safe_load((EXPERIMENTS / name).read_text())
    assert body["profiles"]["demo"]["data"]["dataset"] == body["data"]["dataset"]  # not the built-in SST-2


@pytest.mark.slow
def test_sweep_on_a_preset_optimizes_its_metric(tmp_path, tiny_bert_dir):
    """Ray trials run in their own directories: a relative GLUE_DIR reaches them resolved; the sweep and the analysis
    take CoLA's metric (val_mcc) by name."""
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from tests.conftest import REPO

    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, data={"dataset": "glue/cola", "max_length": 32})
    env = dict(os.environ, GLUE_DIR=os.path.relpath(GLUE_DIR, REPO), RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE",
                                                                                                  "token"))
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "s"),
                          "--name", "cola"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials (2 TERMINATED)" in out.stdout and re.search(r"best \S+ val_mcc -?\d", out.stdout), out.stdout
    assert main(["analyze", str(tmp_path / "s" / "cola"), "--out", str(tmp_path / "pq")]) == 0
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pylist()
    assert {t["primary_metric"] for t in trials} == {"val_mcc"} and {t["dataset"] for t in trials} == {"glue/cola"}
    assert trials[0]["label_names"] == ["unacceptable", "acceptable"] and trials[0]["text_columns"] == ["sentence"]
    epochs = pq.read_table(tmp_path / "pq" / "epochs.parquet").to_pylist()
    assert len(epochs) == 4 and all(e["val_mcc"] is not None and e["val_examples"] == 1043 for e in epochs)


def test_a_split_may_be_named_by_a_path_inside_the_folder(tmp_path):
    """`splits: {train: sub/train.tsv}`: a path under the dataset folder (or an absolute one) is taken as it is."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\t1\n")
    data = DataConfig(dataset=str(tmp_path), splits=Splits("sub/mine.tsv", "dev"))
    files = {f.role: f.path for f in resolve_source(data).files}
    assert files == {"train": tmp_path / "sub" / "mine.tsv", "eval": tmp_path / "dev.tsv"}
