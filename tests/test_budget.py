"""Placement at equal cost: ranks chosen for a parameter budget, counted by PEFT itself, within one module's rank
step of the budget on every architecture and method; the spec, plan, trial names and the report's grouping."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from lora_ext.budget import ModuleCost, budget_ranks, module_costs, ranks_for_budget
from lora_ext.placement import Placement
from record.errors import InputError, InputErrors
from tests import tiny_models
from tests.conftest import EXPERIMENTS, tiny_spec


def peft_adapter_count(config, placement: Placement) -> int:
    """What PEFT reports as trainable on the meta device, minus the head (trained in full by every placement)."""
    from transformers import AutoModelForSequenceClassification

    from lora_ext.adapt import apply_placement

    with torch.device("meta"):
        model = apply_placement(AutoModelForSequenceClassification.from_config(config), placement, initialise=False)
        head = apply_placement(AutoModelForSequenceClassification.from_config(config),
                               Placement(baseline="classifier_only"))
    trainable, _ = model.get_nb_trainable_parameters()
    return trainable - sum(p.numel() for p in head.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "modernbert", "llama", "deberta-v2"])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_budget_ranks_match_peft_own_count_within_one_module_step(model_type, method):
    """On tiny models of each layout (ModernBERT's fused Wqkv, Llama's two-module `up`), with DoRA's magnitudes:
    the count the ranks are chosen by is PEFT's own, and never further from the budget than one module's step."""
    config = tiny_models.tiny_config(model_type)
    n = config.num_hidden_layers
    for layers, components in ((tuple(range(n)), ("up", "down")), ((n - 1,), ("o", "up")),
                               (tuple(range(0, n, 2)), ("o", "down"))):
        one = Placement(layers=layers, components=components, r=1, method=method)
        costs = module_costs(config, one)
        assert len(costs) == len(layers) * len(components)
        floor = sum(c.per_rank + c.fixed for c in costs)
        for budget in (floor, floor + 1, 3 * floor + 17, 10 * floor - 5):
            chosen = budget_ranks(config, one, budget)
            placement = Placement(layers=layers, components=components, r=chosen.r,
                                  rank_pattern=chosen.rank_pattern, method=method)
            assert peft_adapter_count(config, placement) == chosen.adapter_params, (model_type, budget)
            assert abs(chosen.distance) <= chosen.step == max(c.per_rank for c in costs)


def test_the_fused_projection_is_one_module_and_dora_adds_its_magnitude():
    config = tiny_models.tiny_config("modernbert")  # hidden 32: Wqkv 32 -> 96, so 128 per rank
    lora = module_costs(config, Placement(layers=(0,), components=("qkv",), r=1))
    dora = module_costs(config, Placement(layers=(0,), components=("qkv",), r=1, method="dora"))
    assert lora == [ModuleCost("qkv@0", 32 + 96, 0)]
    assert dora == [ModuleCost("qkv@0", 32 + 96, 96)]  # one magnitude per output feature, whatever the rank


def test_a_uniform_rank_where_it_lands_on_the_budget_else_r_plus_one_on_the_nearest_modules():
    costs = [ModuleCost(f"q@{i}", 100, 0) for i in range(4)] + [ModuleCost(f"up@{i}", 300, 0) for i in range(4)]
    near = ranks_for_budget(costs, 4800 + 5)  # 5 over r=3 everywhere: within 0.5 % and a step, so uniform
    assert (near.r, near.rank_pattern, near.distance) == (3, (), -5)
    exact = ranks_for_budget(costs, 4800)
    assert (exact.r, exact.rank_pattern, exact.distance) == (3, (), 0)
    mixed = ranks_for_budget(costs, 4800 + 700)  # 700 more: two `up` (600) and one `q` (100)
    assert mixed.r == 3 and mixed.distance == 0
    assert sorted(k for k, _ in mixed.rank_pattern) == ["q@2", "up@1", "up@3"]  # spread over the 4 of each
    assert {r for _, r in mixed.rank_pattern} == {4}
    above = ranks_for_budget([ModuleCost(f"up@{i}", 300, 0) for i in range(4)], 1200 + 290)
    assert above.distance == 10  # one more module (300) overshoots by 10, better than 290 short
    with pytest.raises(InputError, match="below what this placement trains at r=1"):
        ranks_for_budget(costs, 1599)


def _spec(tmp_path, tiny_bert_dir, lora: dict, scenarios: str):
    """tiny_spec's study with this `lora:` section as it is (tiny_spec's own ranks left out)."""
    import yaml

    from tune_jobs.study.spec import load_study

    path = tiny_spec(tmp_path, tiny_bert_dir, scenarios)
    body = yaml.safe_load(path.read_text())
    body["lora"] = lora
    path.write_text(yaml.safe_dump(body))
    return load_study(path)


def test_budgets_are_an_axis_with_names_records_and_a_plan(tmp_path, tiny_bert_dir):
    from tune_jobs.data.splits import checked_study
    from tune_jobs.plan import format_table, plan
    from tune_jobs.study.grid import expand

    scenarios = ("scenarios:\n  - {name: mlp, layers: all, components: up+down}\n"
                 "  - {name: qv, layers: all, components: q+v}\n  - {name: head, baseline: classifier_only}\n")
    study = checked_study(_spec(tmp_path, tiny_bert_dir, {"budgets": [3000, 12000], "dropout": 0.0}, scenarios))
    trials = {t.trial_name: t for t in expand(study)}
    assert sorted(trials) == ["head-rep0", "mlp-b12k-rep0", "mlp-b3k-rep0", "qv-b12k-rep0", "qv-b3k-rep0"]
    assert trials["qv-b3k-rep0"].budget == 3000 and trials["head-rep0"].budget is None
    planned = plan(study)
    for p in planned:
        if p.trial.budget is not None:
            step = max(c.per_rank for c in module_costs(_config(study), p.trial.placement()))
            assert abs(p.adapter_params - p.trial.budget) <= step
            assert p.row()["budget_distance"] == p.adapter_params - p.trial.budget
    table = format_table(study, planned)
    assert "budget" in table and "adapters" in table and "off by" in table


def _config(study):
    from tune_jobs.remote.model import load_model_config

    return load_model_config(study.model, 2)


@pytest.mark.parametrize("lora, field, says", [
    ({"budgets": [5000], "ranks": [4]}, "scenarios[0] (mlp).budgets", "set together with ranks"),
    ({"budgets": [10]}, "scenarios[0] (mlp).budgets[0]", "below what this placement trains at r=1"),
    ({"budgets": [0]}, "lora.budgets[0]", "not a parameter budget"),
    ({"budgets": [5000, 5000]}, "lora.budgets", "duplicate budget"),
])
def test_a_bad_budget_is_one_line_naming_the_field(tmp_path, tiny_bert_dir, lora, field, says):
    with pytest.raises((InputError, InputErrors)) as err:
        _spec(tmp_path, tiny_bert_dir, lora, "scenarios:\n  - {name: mlp, layers: all, components: up+down}\n")
    errors = err.value.errors if isinstance(err.value, InputErrors) else [err.value]
    assert any(e.field == field and says in str(e) for e in errors), [str(e) for e in errors]


@pytest.mark.parametrize("profile, model_type", [("paper", "roberta"), ("modernbert", "modernbert")])
def test_the_shipped_study_keeps_every_placement_within_one_module_step_of_its_budget(profile, model_type):
    """`plan placement_budget.yaml --profile paper|modernbert`: RoBERTa-base and ModernBERT-base, counted from their
    shipped configs; every LoRA row within one module's rank step of its budget, both budgets, seven placements."""
    from tune_jobs.plan import plan
    from tune_jobs.study.spec import load_study

    study = load_study(EXPERIMENTS / "placement_budget.yaml", profile)
    assert study.model_type == model_type
    planned = plan(study)
    lora = [p for p in planned if p.trial.budget is not None]
    assert {p.trial.scenario for p in lora} == {"all_linear", "mlp", "attention", "qv", "upper", "lower",
                                                "alternate"}
    assert len({p.trial.budget for p in lora}) == 2
    assert {p.trial.baseline for p in planned} == {None, "classifier_only", "full"}
    if profile == "paper":  # tune, then confirm: the learning rate is chosen per placement and budget
        from tune_jobs.study.grid import cells

        choices = {c.choice for c in cells(study) if c.choice}
        assert {"mlp-b332k", "mlp-b1.33M", "qv-b332k", "qv-b1.33M"} <= choices and len(choices) == 14
    config = _config(study)
    for p in {p.trial.placement(): p for p in lora}.values():
        step = max(c.per_rank for c in module_costs(config, p.trial.placement()))
        assert abs(p.adapter_params - p.trial.budget) <= step, p.trial.trial_name


def test_the_demo_profile_is_small_enough_for_a_laptop():
    from tune_jobs.plan import plan
    from tune_jobs.study.spec import load_study

    study = load_study(EXPERIMENTS / "placement_budget.yaml", "demo")
    planned = plan(study)
    assert study.model == "minilm-l6" and study.select is None and len(planned) == 48
    assert {p.trial.epochs for p in planned} == {2} and study.data.train_limit <= 2000


def test_the_report_compares_placements_within_one_budget_only():
    """Synthetic runs at two budgets plus a baseline: every pair tested shares a budget, the labels say b=, and
    the headline speaks per budget."""
    from analysis.compare import compare
    from analysis.groups import group_labels, strata_keys

    rows = []
    for scenario, budget, base in (("mlp", 3000, 0.80), ("qv", 3000, 0.78), ("mlp", 12000, 0.82),
                                   ("qv", 12000, 0.81), ("head", None, 0.70)):
        for seed in range(4):
            rows.append({"scenario": scenario, "budget": budget, "r": 4, "baseline": None if budget else "x",
                         "components": {"mlp": ["up", "down"], "qv": ["q", "v"]}.get(scenario, []),
                         "seed": seed, "value": base + 0.002 * seed, "model": "m", "model_init": "pretrained",
                         "dataset": "d", "task": "classification", "eval_split": "validation",
                         "text_columns": ["sentence"], "label_column": "label"})
    trials = pd.DataFrame(rows)
    trials = pd.concat([trials, strata_keys(trials)], axis=1).assign(group=lambda t: group_labels(t))
    assert set(trials["group"]) == {"mlp b=3k", "qv b=3k", "mlp b=12k", "qv b=12k", "head"}
    comparisons, family = compare(trials[["group", "seed", "value", "model_key", "data_key", "compare_key"]],
                                  "val_accuracy", None)
    budget_of = dict(zip(trials["group"], trials["budget"]))
    tested = {frozenset((a, b)) for a, b in zip(comparisons["a"], comparisons["b"])}
    assert tested == {frozenset(("mlp b=3k", "qv b=3k")), frozenset(("mlp b=12k", "qv b=12k"))}
    assert all(budget_of[a] == budget_of[b] for a, b in zip(comparisons["a"], comparisons["b"]))
    assert family.pairs == 2


def test_the_extra_rank_is_spread_over_the_layers_not_bunched_at_the_bottom():
    """RoBERTa-base, MLP only at 331,776: r=3 everywhere and r + 1 on modules spread from the bottom to the top."""
    from lora_ext.model_configs import load_model_config

    config = load_model_config("roberta-base")
    chosen = budget_ranks(config, Placement(layers=tuple(range(12)), components=("up", "down"), r=1), 331_776)
    layers = sorted(int(k.split("@")[1]) for k, _ in chosen.rank_pattern)
    assert chosen.r == 3 and len(layers) >= 4
    assert min(layers) <= 2 and max(layers) >= 9  # both ends of the stack, not layers 0..k


def test_count_text_rolls_over_and_colliding_budget_names_are_refused(tmp_path, tiny_bert_dir):
    from record.fields import count_text

    assert [count_text(n) for n in (999, 82_944, 999_600, 1_327_104)] == ["999", "82.9k", "1M", "1.33M"]
    with pytest.raises(InputErrors, match="would both be named b83k"):
        _spec(tmp_path, tiny_bert_dir, {"budgets": [83_000, 83_040]},
              "scenarios:\n  - {name: mlp, layers: all, components: up+down}\n")


def test_a_budget_trial_is_picked_by_budget_and_method(tmp_path, tiny_bert_dir):
    """DoRA's magnitudes take part of the budget, so its ranks can differ from LoRA's at the same budget."""
    from tune_jobs.study.grid import select_trial

    study = _spec(tmp_path, tiny_bert_dir, {"budgets": [2500, 9000], "method": ["lora", "dora"]},
                  "scenarios:\n  - {name: mlp, layers: all, components: up+down}\n")
    for method in ("lora", "dora"):
        trial = select_trial(study, "mlp", budget=9000, method=method)
        assert (trial.budget, trial.method) == (9000, method)
    with pytest.raises(InputError, match="several budgets"):
        select_trial(study, "mlp", method="lora")


def test_cells_at_other_budgets_are_other_strata_of_the_sequential_rule(tmp_path, tiny_bert_dir):
    from tune_jobs.study.grid import cells
    from tune_jobs.sweep.searcher import stratum_of

    study = _spec(tmp_path, tiny_bert_dir, {"budgets": [2500, 9000]},
                  "scenarios:\n  - {name: mlp, layers: all, components: up+down}\n"
                  "  - {name: qv, layers: all, components: q+v}\n")
    by_stratum: dict = {}
    for cell in cells(study):
        by_stratum.setdefault(stratum_of(cell), set()).add(cell.trials[0].budget)
    assert sorted(len(b) for b in by_stratum.values()) == [1, 1]


def test_an_explicit_reference_is_compared_across_budgets_and_the_forest_names_each_budgets_best():
    from analysis import plots
    from analysis.compare import compare

    rows = [{"group": g, "seed": s, "value": v + 0.003 * s, "model_key": "m", "data_key": "d",
             "compare_key": k} for g, k, v in (("mlp b=3k", "d|3000", 0.8), ("qv b=3k", "d|3000", 0.78),
                                                ("mlp b=12k", "d|12000", 0.82), ("qv b=12k", "d|12000", 0.79),
                                                ("head", "d", 0.7)) for s in range(3)]
    values = pd.DataFrame(rows)
    against_head, _ = compare(values, "val_accuracy", "head")
    assert len(against_head) == 4  # every group against the reference, whatever its budget
    within, _ = compare(values, "val_accuracy", None)
    fig = plots.forest(within, ["mlp b=3k", "mlp b=12k"], 0.01, "val_accuracy")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == ["qv b=12k − mlp b=12k", "qv b=3k − mlp b=3k"]
    plots.close(fig)
