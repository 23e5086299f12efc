"""Spec loading, grid expansion and `lora-sweep plan`, including every kind of bad input."""

import json
import subprocess
import sys
import textwrap

import pytest

from record.errors import InputError
from tests.conftest import EXPERIMENTS, REPO
from tune_jobs.cli import main
from tune_jobs.study.grid import expand, select_trial
from tune_jobs.study.spec import load_study

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
    assert ((co["baseline"], co["layers"], co["components"], co["trainable_params"])
            == ("classifier_only", [], [], 592_130))
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


# ---------------------------------------------------------------- training-setting axes, selection, precedence

AXES = GOOD.replace("components: all}", "components: all, ranks: [1, 8], train: {learning_rate: [5e-4, 1e-3]}}") \
    + "repeats: 2\n"


def spec_file(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_scenario_learning_rate_axis_times_ranks_times_repeats(tmp_path):
    trials = expand(load_study(spec_file(tmp_path, AXES)))
    assert len(trials) == 2 * 2 * 2
    assert [t.trial_name for t in trials] == [f"a-r{r}-lr{lr}-rep{k}" for r in (1, 8) for lr in ("5e-4", "1e-3")
                                              for k in (0, 1)]
    configs = {(t.r, t.learning_rate, t.repeat) for t in trials}
    assert configs == {(r, lr, k) for r in (1, 8) for lr in (5e-4, 1e-3) for k in (0, 1)}  # distinct columns


def test_study_level_axis_and_scenario_scalar_override(tmp_path):
    text = GOOD + "  - {name: b, layers: all, components: v, train: {learning_rate: 2e-3}}\n" \
        + "  - {name: head, baseline: classifier_only}\ntrain: {learning_rate: [1e-3, 2e-3], weight_decay: [0, 0.1]}\n"
    trials = expand(load_study(spec_file(tmp_path, text)))
    names = [t.trial_name for t in trials if t.scenario == "b"]
    assert names == ["b-r8-wd0-rep0", "b-r8-wd0.1-rep0"]  # lr is fixed in b: not in its names
    for scenario, prefix in (("a", "a-r8-"), ("head", "head-")):  # the study's axes reach baselines too
        assert [t.trial_name for t in trials if t.scenario == scenario] == [
            f"{prefix}lr{lr}-wd{wd}-rep0" for lr in ("1e-3", "2e-3") for wd in ("0", "0.1")]
    assert {t.learning_rate for t in trials if t.scenario == "b"} == {2e-3}


def test_list_valued_setting_takes_a_list_of_lists(tmp_path):
    one = expand(load_study(spec_file(tmp_path, GOOD + "train: {adam_betas: [0.9, 0.95]}\n")))
    assert len(one) == 1 and one[0].adam_betas == [0.9, 0.95] and one[0].trial_name == "a-r8-rep0"
    two = expand(load_study(spec_file(tmp_path, GOOD + "train: {adam_betas: [[0.9, 0.98], [0.9, 0.999]]}\n")))
    assert [(t.trial_name, t.adam_betas) for t in two] == [("a-r8-betas-0.9_0.98-rep0", [0.9, 0.98]),
                                                           ("a-r8-betas-0.9_0.999-rep0", [0.9, 0.999])]


AXIS_BAD = [
    ("axis element", "train: {learning_rate: [1e-3, -1]}\n", "train.learning_rate[1]: must be a number > 0"),
    ("scenario axis element", None, "scenarios[0] (a).train.epochs[0]: must be an integer >= 1"),
    ("pair axis element", "train: {adam_betas: [[0.9, 0.98], [0.9]]}\n", "train.adam_betas[1]: must be a list of two"),
    ("duplicate", "train: {learning_rate: [1e-3, 0.001]}\n", "train.learning_rate: duplicate value in an axis"),
    ("empty axis", "train: {learning_rate: []}\n", "train.learning_rate: an axis needs at least one value"),
    ("both fractions", "data: {selection: {fraction: 0.1, rows: 10}}\n", "data.selection: give fraction or rows"),
    ("bad fraction", "data: {selection: {fraction: 1.0}}\n", "data.selection.fraction: must be a number in (0, 1)"),
    ("selection key", "data: {selection: {row: 10}}\n", "data.selection.row: unknown key"),
    ("profile scenario", "profiles: {p: {scenarios: {zz: {train: {epochs: 2}}}}}\n", "profiles.p.scenarios.zz"),
]


@pytest.mark.parametrize("label,extra,message", AXIS_BAD, ids=[c[0] for c in AXIS_BAD])
def test_bad_axis_or_selection_is_one_line(tmp_path, capsys, label, extra, message):
    text = GOOD + extra if extra else GOOD.replace("components: all}", "components: all, train: {epochs: [0, 2]}}")
    argv = ["plan", str(spec_file(tmp_path, text))] + (["--profile", "p"] if "profiles:" in text else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


PRECEDENCE = [  # (layer added, epochs it sets); each level adds one layer over the ones before it
    ("defaults", None),
    ("spec train", "train: {epochs: 4}\n"),
    ("scenario train", None),
    ("profile train", "profiles: {p: {train: {epochs: 6}}}\n"),
    ("profile scenario train", "profiles: {p: {train: {epochs: 6}, scenarios: {a: {train: {epochs: 7}}}}}\n"),
]


@pytest.mark.parametrize("level", range(len(PRECEDENCE)), ids=[p[0] for p in PRECEDENCE])
def test_precedence_of_training_settings(tmp_path, level):
    text = GOOD
    if level >= 2:
        text = text.replace("components: all}", "components: all, train: {epochs: 5}}")
    if level >= 1:
        text += "train: {epochs: 4}\n"
    if level >= 3:
        text += PRECEDENCE[level][1]
    trials = expand(load_study(spec_file(tmp_path, text), "p" if level >= 3 else None))
    assert [t.epochs for t in trials] == [[3, 4, 5, 6, 7][level]]


def test_plan_shows_profile_scenario_override_winning(tmp_path, capsys):
    text = GOOD + "  - {name: b, layers: all, components: v}\n" \
        + "profiles: {quick: {train: {epochs: 2}, scenarios: {a: {train: {epochs: 3, learning_rate: [1e-3, 2e-3]}}}}}\n"
    assert main(["plan", str(spec_file(tmp_path, text)), "--profile", "quick", "--json"]) == 0
    rows = {r["trial_name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {n: r["epochs"] for n, r in rows.items()} == {"a-r8-lr1e-3-rep0": 3, "a-r8-lr2e-3-rep0": 3, "b-r8-rep0": 2}
    assert main(["plan", str(spec_file(tmp_path, text)), "--profile", "quick"]) == 0
    table = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if "-rep0" in line}
    assert table["a-r8-lr2e-3-rep0"][6:8] == ["3", "2e-3"] and table["b-r8-rep0"][6:8] == ["2", "1.4e-3"]


def test_selection_split_in_every_trial_and_the_plan(tmp_path, capsys):
    text = AXES + "base_seed: 11\ndata: {selection: {rows: 500}, train_limit: 1000}\n"
    trials = expand(load_study(spec_file(tmp_path, text)))
    assert {(t.selection_rows, t.selection_fraction, t.selection_seed) for t in trials} == {(500, None, 11)}
    assert {t.seed for t in trials} == {11, 12}  # trial seeds vary; the held-out rows' seed does not
    assert main(["plan", str(tmp_path / "spec.yaml")]) == 0
    assert "selection split 500 rows of train (seed 11)" in capsys.readouterr().out


def test_select_trial_picks_an_axis_value(tmp_path):
    study = load_study(spec_file(tmp_path, AXES))
    trial = select_trial(study, "a", r=8, repeat=1, axis={"learning_rate": "1e-3"})
    assert (trial.trial_name, trial.learning_rate) == ("a-r8-lr1e-3-rep1", 1e-3)
    with pytest.raises(InputError, match="--axis: scenario a varies learning_rate; pick a value.*learning_rate=5e-4"):
        select_trial(study, "a", r=8)
    with pytest.raises(InputError, match="--axis learning_rate: not a value of the axis.*one of 5e-4, 1e-3"):
        select_trial(study, "a", r=8, axis={"learning_rate": "3e-3"})


@pytest.mark.parametrize("profile,counts", [("paper", (6, 3, 5)), ("demo", (6, 2, 2))])
def test_rank_study_has_a_learning_rate_axis_per_rank(profile, counts):
    study = load_study(EXPERIMENTS / "rank.yaml", profile)
    trials = expand(study)
    ranks, rates, repeats = counts
    assert len(trials) == ranks * rates * repeats
    for r in (1, 32):
        assert len({t.learning_rate for t in trials if t.r == r}) == rates
    assert all(t.selection_rows or t.selection_fraction for t in trials)
