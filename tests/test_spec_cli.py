"""Spec loading, grid expansion and `lora-sweep plan`, including every kind of bad input."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import EXPERIMENTS, REPO
from tune_jobs.cli import main
from tune_jobs.spec import expand, load_study

SHIPPED = sorted(p.name for p in EXPERIMENTS.glob("*.yaml"))


def test_all_studies_of_the_article_ship():
    assert {"layers.yaml", "components.yaml", "combinations.yaml", "rank.yaml", "final.yaml",
            "layer_memory.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("profile", [None, "paper", "demo"])
def test_shipped_specs_validate(name, profile):
    trials = expand(load_study(EXPERIMENTS / name, profile))
    assert trials
    assert len({t.trial_name for t in trials}) == len(trials)


def test_grid_expansion_rules():
    study = load_study(EXPERIMENTS / "final.yaml", "paper")
    trials = expand(study)
    by_scenario = {}
    for t in trials:
        by_scenario.setdefault(t.scenario, []).append(t)
    assert len(by_scenario["lora_all"]) == 3 * 5          # ranks x repeats
    assert len(by_scenario["full_ft"]) == 5               # baselines are not multiplied by rank
    assert all(t.seed == 42 + t.repeat for t in trials)
    full = by_scenario["full_ft"][0]
    assert (full.learning_rate, full.epochs, full.r, full.layers) == (3e-5, 10, None, [])
    lora = by_scenario["lora_all"][0]
    assert (lora.learning_rate, lora.epochs, lora.batch_size, lora.adam_betas) == (1.4e-3, 14, 480, [0.9, 0.98])
    assert (lora.hidden_dropout, lora.lora_dropout, lora.lr_schedule) == (0.2, 0.1, "cosine")


def test_demo_profile_overrides_only_what_it_names():
    trials = {t.scenario: t for t in expand(load_study(EXPERIMENTS / "final.yaml", "demo"))}
    assert trials["full_ft"].learning_rate == 3e-5 and trials["full_ft"].epochs == 2
    assert trials["lora_all"].model == "minilm-l6" and trials["lora_all"].train_limit == 4000


def test_layers_each_expands_per_layer():
    trials = expand(load_study(EXPERIMENTS / "layer_memory.yaml", "paper"))
    assert {t.scenario for t in trials} >= {"layer_L0", "layer_L11", "layer_gc_L5"}
    assert len(trials) == 24
    assert {t.gradient_checkpointing for t in trials if t.scenario.startswith("layer_gc")} == {True}


def test_plan_json_reference_numbers(capsys):
    assert main(["plan", str(EXPERIMENTS / "final.yaml"), "--profile", "paper", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["scenario"], r["r"]): r for r in rows}
    assert all(r["total_params"] == 124_647_170 for r in rows)
    co = by[("classifier_only", None)]
    assert (co["baseline"], co["layers"], co["components"], co["trainable_params"]) == ("classifier_only", [], [], 592_130)
    assert co["params_relative_pct"] == pytest.approx(0.475, abs=5e-4)
    r8 = by[("lora_all", 8)]
    assert r8["trainable_params"] == 1_919_234 and r8["params_relative_pct"] == pytest.approx(1.54, abs=5e-3)
    assert r8["components"] == ["q", "k", "v", "o", "up", "down"] and r8["layers"] == list(range(12))
    assert by[("lora_all", 1)]["trainable_params"] == 758_018
    assert by[("full_ft", None)]["baseline"] == "full"
    for key in ("repeat", "seed"):
        assert key in r8


def test_plan_table_totals(capsys):
    assert main(["plan", str(EXPERIMENTS / "layers.yaml"), "--profile", "demo"]) == 0
    out = capsys.readouterr().out
    assert "8 trials, 4 distinct configurations" in out
    assert "upper-r8-rep1" in out


GOOD = """\
name: t
model: roberta-base
scenarios:
  - {name: a, layers: all, components: all}
"""

BAD_CASES = [
    ("unknown component", GOOD.replace("components: all", "components: q+x"), "components", "unknown component"),
    ("layer out of range", GOOD.replace("layers: all", "layers: [0, 12]"), "layers", "out of range"),
    ("empty selection", GOOD.replace("components: all", "components: []"), "components", "empty"),
    ("r < 1", GOOD + "lora: {ranks: [0]}\n", "lora.ranks[0]", "rank must be"),
    ("alpha <= 0", GOOD + "lora: {alpha: 0}\n", "lora.alpha", "alpha must be"),
    ("dropout >= 1", GOOD + "lora: {dropout: 1.0}\n", "lora.dropout", "[0, 1)"),
    ("duplicate layers", GOOD.replace("layers: all", "layers: [1, 1]"), "layers", "duplicate"),
    ("unknown top-level key", GOOD + "repeat: 3\n", "repeat", "did you mean 'repeats'"),
    ("unknown train key", GOOD + "train: {learning_rat: 0.1}\n", "train.learning_rat", "did you mean 'learning_rate'"),
    ("malformed yaml", "name: [oops\n", "spec", "malformed YAML"),
    ("bad baseline", GOOD.replace("layers: all, components: all", "baseline: lora"), "baseline", "unknown baseline"),
    ("baseline with layers", GOOD.replace("layers: all,", "baseline: full, layers: all,"), "layers", "baseline has no"),
    ("unknown model", GOOD.replace("roberta-base", "./no/such/dir"), "model", "not found"),
    ("unknown architecture", None, "model", "known model_types"),
    ("negative lr", GOOD + "train: {learning_rate: -1}\n", "train.learning_rate", "> 0"),
    ("scenarios missing", "name: t\nmodel: roberta-base\n", "scenarios", "missing"),
]


@pytest.mark.parametrize("label,text,field,message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_spec_is_one_line_exit_2(tmp_path, capsys, label, text, field, message):
    if text is None:  # a local model directory with an unsupported architecture
        model_dir = tmp_path / "gpt"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
        text = GOOD.replace("roberta-base", str(model_dir))
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert main(["plan", str(spec)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert field in lines[0] and message in lines[0]


def test_unknown_profile_and_missing_file(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    assert main(["plan", str(spec), "--profile", "fast"]) == 2
    err = capsys.readouterr().err
    assert "--profile" in err and "demo" in err and "paper" in err
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_all_errors_reported_at_once(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("components: all", "components: zz") + "repeets: 2\nlora: {ranks: [0]}\n")
    assert main(["plan", str(spec)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 3


def test_console_script_help():
    for args in ([], ["plan"], ["trial"], ["run"], ["analyze"], ["report"]):
        out = subprocess.run([sys.executable, "-m", "tune_jobs", *args, "--help"], capture_output=True, text=True,
                             cwd=REPO)
        assert out.returncode == 0 and "usage:" in out.stdout and len(out.stdout) > 300


HEAVY = ("torch", "ray", "transformers", "peft", "datasets", "pandas", "matplotlib")


def test_top_level_help_imports_nothing_heavy_and_lists_every_subcommand():
    code = ("import sys, contextlib, io\nfrom tune_jobs.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); print(buf.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    loaded, _, text = out.stdout.partition("\n")
    assert loaded == "[]", loaded
    from tune_jobs.cli import SUBCOMMANDS
    for name in SUBCOMMANDS:
        assert f"    {name} " in text


def test_subcommand_help_texts_match_the_table():
    import argparse
    import importlib

    from tune_jobs.cli import SUBCOMMANDS

    for name, (module, help_) in SUBCOMMANDS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(sub)
        assert sub._choices_actions[0].help == help_, name


def test_custom_profile_in_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD + textwrap.dedent("""\
        profiles:
          quick: {repeats: 3, train: {epochs: 1}, lora: {ranks: [2, 4]}}
    """))
    trials = expand(load_study(spec, "quick"))
    assert len(trials) == 6 and {t.r for t in trials} == {2, 4} and {t.epochs for t in trials} == {1}
