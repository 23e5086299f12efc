"""`lora-sweep export`: one trial of an experiment as a directory the ecosystem loads.

LoRA: `peft.AutoPeftModelForSequenceClassification.from_pretrained(DIR)`; classifier-only and full fine-tuning:
`transformers.AutoModelForSequenceClassification.from_pretrained(DIR)`. With the tokenizer and a model card.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import shutil
import sys
import tempfile
from pathlib import Path

from record.errors import EXIT_OK, InputError, check_output_dir, run_guarded

from .cli_args import installed_version

HELP = "write one trial's trained adapter (or model) as a directory PEFT / transformers load, with a model card"


def trial_configs(experiment: str) -> list[dict]:
    """Every trial's config, finished or not: the report labels groups over all of them."""
    import pyarrow.fs as pafs

    from record.ray_files import open_experiment, trial_states

    fs, exp = open_experiment(experiment)
    return [state["config"] for _, state in sorted(trial_states(fs, exp, fs.get_file_info(pafs.FileSelector(exp)))
                                                   .items())]


def finished_trials(experiment: str) -> list[dict]:
    """Every trial of the experiment that finished (not errored, not diverged, not stopped early by a tuning stage),
    with its config, final result and newest checkpoint path; a finished trial whose result.json is cut carries
    `damaged` (the error `intact` raises when a choice would read it)."""
    import pyarrow.fs as pafs

    from record.outcome import FINISHED, TERMINATED, outcome
    from record.ray_files import RESULT_FILE, latest_checkpoint, open_experiment, read_results, trial_states

    fs, exp = open_experiment(experiment)
    entries = fs.get_file_info(pafs.FileSelector(exp))
    states = trial_states(fs, exp, entries)
    out = []
    for rel, state in sorted(states.items()):
        tdir = posixpath.join(exp, rel)
        results, problem = read_results(fs, posixpath.join(tdir, RESULT_FILE))
        if problem and state["status"] == TERMINATED:  # its final result is unknown: choosing without it is wrong
            name = state["config"].get("trial_name") or rel
            out.append({"config": state["config"], "final": {}, "damaged": InputError(
                f"trial {name}", f"finished, but its {RESULT_FILE} is unreadable: "
                + problem.replace("corrupt or truncated line; this and later reports ignored",
                                  "corrupt or truncated at this line"),
                allowed=f"restore {RESULT_FILE} from a copy, or move the trial folder out of the experiment")})
            continue
        # not errored, not diverged, not a tuning-stage candidate ASHA ended (a model of fewer epochs than its config
        # says); and with a final result to choose by
        if not results or outcome(state["status"], results[-1], state["config"]) != FINISHED:
            continue
        checkpoint = latest_checkpoint(fs.get_file_info(pafs.FileSelector(tdir, allow_not_found=True)))
        if checkpoint:
            out.append({"config": state["config"], "final": results[-1], "checkpoint": checkpoint, "fs": fs})
    return out


def intact(pool: list[dict]) -> list[dict]:
    """`pool` when none of its trials is damaged; else the first one's error: a choice among them needs every
    final result (the damaged one may be the best)."""
    for trial in pool:
        if "damaged" in trial:
            raise trial["damaged"]
    return pool


def _ranking_metric(pool: list[dict]) -> tuple[str, float, str]:
    """(metric, sign, where it was measured): the study's primary metric (val_mcc for CoLA, val_f1 for MRPC, ...) on
    the selection split when every trial has one, else on the dev set; val_accuracy for experiments made before
    studies named their metric."""
    from record.metrics import SELECTION, higher_is_better, on_split, primary_metric

    dev = primary_metric(next((t["config"] for t in pool if t["config"].get("primary_metric")), {}))
    sel = on_split(SELECTION, dev)
    metric = sel if all(t["final"].get(sel) is not None for t in pool) else dev
    why = "the selection split" if metric == sel else "the dev set (no selection split: optimistic)"
    return metric, 1.0 if higher_is_better(metric) else -1.0, why


def best_by_primary_metric(pool: list[dict]) -> tuple[dict, str]:
    """The trial with the best final value of the study's primary metric (`_ranking_metric`)."""
    metric, sign, why = _ranking_metric(pool)
    scored = [t for t in pool if t["final"].get(metric) is not None]
    if not scored:
        raise InputError("--best", f"no finished trial of this scenario reports {metric}",
                         allowed="--repeat or --trial")
    chosen = max(scored, key=lambda t: sign * t["final"][metric])
    return chosen, f"best final {metric} ({chosen['final'][metric]:.4f}) of {len(pool)} trials, chosen on {why}"


def group_labels(trials: list[dict], configs: list[dict] | None = None) -> list[str]:
    """Each trial's group as the report labels it (`all r=8`, `upper r=8 lr=0.001`): one configuration, seeds aside;
    labelled among `configs` (every trial of the experiment, as the report labels them; default: `trials`')."""
    import pandas as pd

    from analysis.groups import group_labels as labels
    from record.fields import filled

    every = [t["config"] for t in trials] + list(configs or ())
    named = labels(pd.DataFrame([filled(c) for c in every]))
    return list(named[:len(trials)])


def best_group(trials: list[dict], configs: list[dict] | None = None) -> tuple[dict, str]:
    """The best trial of the study's best group (by the mean final primary metric over its seeds), and a sentence
    saying how both were chosen."""
    metric, sign, why = _ranking_metric(trials)
    groups: dict[str, list[dict]] = {}
    for trial, label in zip(trials, group_labels(trials, configs)):
        if trial["final"].get(metric) is not None:
            groups.setdefault(label, []).append(trial)
    if not groups:
        raise InputError("--best", f"no finished trial reports {metric}", allowed="--scenario NAME --repeat N")

    def mean(label: str) -> float:
        return sum(t["final"][metric] for t in groups[label]) / len(groups[label])

    label = max(groups, key=lambda g: sign * mean(g))
    best = max(groups[label], key=lambda t: sign * t["final"][metric])
    return best, (f"group '{label}', the best mean final {metric} of {len(groups)} groups ({mean(label):.4f} over "
                  f"{len(groups[label])} seed(s)), and its best seed ({best['final'][metric]:.4f}); both chosen on "
                  f"{why}")


def choose(trials: list[dict], scenario: str, r: int | None, repeat: int | None, best: bool,
           trial_name: str | None, method: str | None = None, configs: list[dict] | None = None) -> tuple[dict, str]:
    """The trial the flags name, and a sentence saying how it was chosen. `scenario` is a scenario name or a group
    label of the report (`all r=8`, labelled among `configs`: every trial's); empty with `best`: the study's best
    group."""
    if trial_name:
        named = intact([t for t in trials if t["config"].get("trial_name") == trial_name])
        if not named:
            raise InputError("--trial", "no finished trial of that name", got=trial_name)
        return named[0], f"trial {trial_name}"
    if not trials:
        raise InputError("EXPERIMENT", "has no finished trial with a checkpoint", allowed="an experiment `lora-sweep "
                         "run` wrote (STORAGE/NAME), after at least one trial finished")
    names = sorted({str(t["config"].get("scenario")) for t in trials})
    labels = group_labels(trials, configs)
    if not scenario and best:
        return best_group(intact(trials), configs)
    pool = [t for t in trials if t["config"].get("scenario") == scenario]
    if not pool and scenario in labels:
        pool = [t for t, label in zip(trials, labels) if label == scenario]
    if not pool:
        from record.errors import did_you_mean

        groups = sorted(set(labels))
        raise InputError("--scenario", "no finished trial of this scenario or group", got=scenario,
                         allowed=did_you_mean(scenario, [*names, *groups]) + "scenarios: " + ", ".join(names)
                         + "; groups: " + ", ".join(groups))
    ranks = sorted({t["config"].get("r") for t in pool}, key=lambda v: (v is None, v))
    if r is not None:
        pool = [t for t in pool if t["config"].get("r") == r]
        if not pool:
            raise InputError("--r", "scenario has no finished trial of this rank", got=r, allowed=f"ranks: {ranks}")
    from record.fields import filled
    from tune_jobs.study.grid import pick_method

    pool = pick_method(pool, method, scenario, key=lambda t: filled(t["config"]).get("method"))
    if best:
        return best_by_primary_metric(intact(pool))
    pool = intact([t for t in pool if t["config"].get("repeat") == (repeat or 0)])
    if len(pool) != 1:
        found = sorted(t["config"].get("trial_name") for t in pool)
        raise InputError("--repeat" if not pool else "--trial", "names no single finished trial", got=found or repeat,
                        allowed="add --r, --method, --best, or --trial NAME (see `lora-sweep plan`)")
    return pool[0], f"repeat {repeat or 0}"


def _method_text(tc) -> str:
    from lora_ext.methods import PLAIN, changes_base

    if tc.method in (None, PLAIN):
        return ""
    text = f", method {tc.method}" + (f" (loraplus_lr_ratio {tc.loraplus_lr_ratio:g})" if tc.loraplus_lr_ratio else "")
    return text + (f"; exported as a plain LoRA delta of rank {2 * tc.r} on the original base weights (PEFT's "
                   "conversion)" if changes_base(tc.method) else "")


def portable_base(model: str) -> tuple[str, str]:
    """(the base model an export records, a sentence on where it loads from): the hub id the spec's model stands
    for (`minilm-l6` -> sentence-transformers/all-MiniLM-L6-v2), a local path only when nothing else is known."""
    from lora_ext import hub_id, model_location

    found = hub_id(model)
    if found:
        return found, "the Hugging Face hub (or its local cache)"
    if "://" in model:
        return model, (f"a remote folder, `{model}`: copy it to the machine that loads this export and set "
                       "`base_model_name_or_path` in adapter_config.json to that copy")
    where = model_location(model)
    return where, (f"a local path, `{where}`: nothing else is known about this base; on another machine set "
                   "`base_model_name_or_path` in adapter_config.json to your copy of it")


def label_kwargs(tc) -> str:
    """`from_pretrained` keyword arguments that give a base model the study's head: its label names (or one output
    for regression)."""
    if tc.num_labels == 1:
        return "num_labels=1"
    names = list(tc.label_names or (str(i) for i in range(tc.num_labels)))
    return f"id2label={dict(enumerate(names))!r}, label2id={ {n: i for i, n in enumerate(names)}!r}"


def trained_with(checkpoint: Path) -> dict:
    """The provenance (record.fields.PROVENANCE) of the run that wrote a trial's checkpoint: the last one its
    history (trial_state.json) holds; all None for a checkpoint made before trials recorded it."""
    from record.fields import provenance_of
    from tune_jobs.train.checkpoint import STATE_FILE

    try:
        history = json.loads((checkpoint / STATE_FILE).read_text()).get("history", [])
    except (OSError, ValueError, AttributeError):
        history = []
    return provenance_of(history if isinstance(history, list) else [])


def provenance_text(origin: dict) -> str:
    """One line of what trained the model: device, driver, CUDA, packages, lora-sweep's commit."""
    if not any(origin.values()):
        return "not recorded (a trial made before lora-sweep recorded its node's versions)"
    device = origin.get("device_name") or "unknown device"
    details = [f"driver {origin['driver_version']}" if origin.get("driver_version") else "",
               f"CUDA {origin['cuda_version']}" if origin.get("cuda_version") else ""]
    device += f" ({', '.join(d for d in details if d)})" if any(details) else ""
    packages = ", ".join(f"{name} {origin.get(f'{name}_version') or '?'}"
                         for name in ("python", "torch", "transformers", "peft", "ray"))
    commit = origin.get("git_commit")
    source = (f"commit {commit}" + (" with uncommitted changes" if origin.get("git_dirty") else "")) if commit else \
        "no git commit known (an installed package, or code Ray uploaded without .git)"
    return f"{device}; {packages}; lora-sweep {origin.get('lora_sweep_version') or '?'}, {source}"


def model_card(tc, final: dict, how: str, base: str, where: str, adapter: bool, origin: dict | None = None) -> str:
    """README.md for the exported directory: what was trained, how it was chosen, its final metrics, what trained
    it (`origin`: the training node's provenance, `trained_with`; default: what `final` holds), how to load it.
    `adapter`: a PEFT adapter on `base` (else a complete transformers model)."""
    from record.fields import PROVENANCE_NAMES
    from record.metrics import is_split_metric

    origin = origin if origin is not None else {name: final.get(name) for name in PROVENANCE_NAMES}

    placement = ("classifier head only" if tc.baseline == "classifier_only" else "every weight (full fine-tuning)"
                 if tc.baseline == "full" else f"LoRA r={tc.r}, alpha={tc.alpha or tc.r}, layers {tc.layers}, "
                 f"components {'+'.join(tc.components)}" + (f", ranks {tc.rank_pattern}" if tc.rank_pattern else "")
                 + _method_text(tc))
    metrics = {k: v for k, v in final.items() if (is_split_metric(k) or k == "train_loss") and v is not None}
    if adapter:
        load = ("from peft import AutoPeftModelForSequenceClassification\n"
                f"model = AutoPeftModelForSequenceClassification.from_pretrained(DIR, {label_kwargs(tc)})")
        note = ("Loading builds the base model first, and transformers' load report lists its `classifier` as "
                "MISSING (newly initialised): the base has no head. PEFT then loads the trained head from this "
                "folder (`modules_to_save`), so the model predicts as the trial did. The label names are passed "
                "because the base's config cannot carry them. `lora-sweep export --merged` writes a complete "
                "model instead, which loads with its labels and without that report.")
    else:
        load = ("from transformers import AutoModelForSequenceClassification\n"
                "model = AutoModelForSequenceClassification.from_pretrained(DIR)")
        note = "A complete transformers model: its config holds the label names; PEFT is not needed to load it."
    version = installed_version()  # this machine's, which exports; the training node's is in `origin`
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return f"""---
library_name: {"peft" if adapter else "transformers"}
base_model: {base}
tags: [lora-sweep, text-classification]
---
# {tc.study}: {tc.trial_name}

Trained with lora-sweep (study `{tc.study}`, scenario `{tc.scenario}`, seed {tc.seed}); chosen: {how}; exported
by lora-sweep {version}.

- base model: `{base}` (the spec's `{tc.model}`), loaded from {where}
- data: `{tc.dataset}` (train_limit {tc.train_limit}, max_length {tc.max_length})
- labels: {", ".join(tc.label_names or ()) or ("one output (regression)" if tc.num_labels == 1 else tc.num_labels)}
- placement: {placement}
- trainable parameters: {final.get("trainable_params")} \
({final.get("params_relative_pct", float("nan")):.3f} % of full fine-tuning)
- training: {tc.epochs} epochs, learning rate {tc.learning_rate:g}, batch {tc.batch_size}, {tc.lr_schedule} schedule
- trained on: {provenance_text(origin)}

| final-epoch metric | value |
|---|---|
{rows}

```python
{load}
```

{note}
"""


def _initial_model(tc):
    """The trial's model as it started training: the base, adapted as the trial's placement says (a PiSSA/OLoRA
    initialisation redone: it is deterministic, on the CPU)."""
    from lora_ext import apply_placement
    from tune_jobs.train.model import load_model, load_tokenizer

    return apply_placement(load_model(tc, load_tokenizer(tc), tuple(tc.label_names or ("0", "1"))), tc.placement())


def _trained_model(tc, checkpoint: Path):
    """The trial's model rebuilt from its base and its checkpoint."""
    from tune_jobs.train.checkpoint import load_weights

    model = _initial_model(tc)
    load_weights(checkpoint, model)
    return model


def write_converted_adapter(tc, checkpoint: Path, staged: Path, work: Path) -> None:
    """A PiSSA/OLoRA trial trained its adapter on W - B0 A0 (the base minus the initial adapter); PEFT converts the
    trained adapter into a plain LoRA delta (rank 2r) on the original W, which is what an export must load on.

    PEFT's conversion keeps only lora_A/lora_B, so the trained head (`modules_to_save`) is added back from the
    checkpoint's own adapter file: without it the export would load with a fresh, random classifier.
    """
    from safetensors.torch import load_file, save_file

    from tune_jobs.train.checkpoint import ADAPTER_WEIGHTS, load_weights

    model = _initial_model(tc)
    config = model.peft_config["default"]
    initialisation, config.init_lora_weights = config.init_lora_weights, True  # as PEFT's docs save the initial one
    model.save_pretrained(str(work / "initial"))  # B0 A0: what the initialisation took from the base weights
    config.init_lora_weights = initialisation
    load_weights(checkpoint, model)
    model.save_pretrained(str(staged), path_initial_model_for_weight_conversion=str(work / "initial"))
    converted = load_file(str(staged / ADAPTER_WEIGHTS))
    head = {k: v for k, v in load_file(str(checkpoint / ADAPTER_WEIGHTS)).items() if ".lora_" not in k}
    save_file({**converted, **head}, str(staged / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (staged / "README.md").unlink(missing_ok=True)  # PEFT's stub card; ours is written next


def export(experiment: str, out: Path, scenario: str | None, r: int | None, repeat: int | None, best: bool,
           trial_name: str | None, method: str | None = None, merged: bool = False) -> str:
    """Write the chosen trial into `out`; returns a one-line summary. `merged`: a LoRA trial's adapter merged into
    its base and written as a complete transformers model."""
    import pyarrow.fs as pafs
    from transformers import AutoTokenizer

    from lora_ext.methods import changes_base
    from tune_jobs.remote.model import local_model
    from tune_jobs.study.spec import TrialConfig
    from tune_jobs.train.checkpoint import ADAPTER_WEIGHTS

    check_output_dir(out)  # a file there (or above it): one line, not a NotADirectoryError
    if out.exists() and any(out.iterdir()):
        raise InputError("--out", "exists and is not empty", got=str(out), allowed="a new or empty directory")
    chosen, how = choose(finished_trials(experiment), scenario or "", r, repeat, best, trial_name, method,
                         trial_configs(experiment))
    tc = TrialConfig.from_dict(chosen["config"])
    base, where = portable_base(tc.model)
    with tempfile.TemporaryDirectory(prefix="lora-sweep-export-") as tmp:
        local = Path(tmp) / "ckpt"
        local.mkdir()
        pafs.copy_files(chosen["checkpoint"], str(local), source_filesystem=chosen["fs"],
                        destination_filesystem=pafs.LocalFileSystem())
        staged = Path(tmp) / "out"
        staged.mkdir()
        adapter = (local / ADAPTER_WEIGHTS).is_file() and not merged
        if adapter and changes_base(tc.method):
            write_converted_adapter(tc, local, staged, Path(tmp))
        elif adapter:
            for name in ("adapter_config.json", ADAPTER_WEIGHTS):
                shutil.copy(local / name, staged / name)
        if adapter:
            config = json.loads((staged / "adapter_config.json").read_text())
            config["base_model_name_or_path"] = base  # the hub id the spec's model stands for, not this machine's path
            (staged / "adapter_config.json").write_text(json.dumps(config, indent=2))
        else:  # the head's label names are in the config load_model built
            model = _trained_model(tc, local)
            (model.merge_and_unload() if hasattr(model, "merge_and_unload") else model).save_pretrained(str(staged))
        tokenizer = AutoTokenizer.from_pretrained(local_model(tc.model, weights=False))  # a URI: staged here
        tokenizer.model_max_length = tc.max_length  # `truncation=True` then cuts where the trial's data was cut
        tokenizer.save_pretrained(str(staged))
        (staged / "lora_sweep_trial.json").write_text(json.dumps({"config": chosen["config"], "final": chosen["final"]},
                                                                 indent=2, default=str))
        (staged / "README.md").write_text(model_card(tc, chosen["final"], how, base, where, adapter,
                                                     trained_with(local)))
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.move(str(staged), str(out))
    return f"exported {tc.trial_name} ({how}) -> {out}" + ("" if adapter else " (a complete transformers model)")


def cmd_export(args: argparse.Namespace) -> int:
    check_output_dir(args.out)  # as typed: Path() would turn s3://b/x into a local s3:/b/x
    if not (args.scenario or args.trial or args.best):
        raise InputError("--scenario", "missing", allowed="--best (the study's best group), --scenario NAME|GROUP, "
                                                          "or --trial TRIAL_NAME")
    if (args.r is not None or args.method) and not args.scenario:
        raise InputError("--r" if args.r is not None else "--method", "only with --scenario",
                         allowed="--scenario NAME --r R [--method M]")
    print(export(args.experiment, Path(args.out), args.scenario, args.r, args.repeat, args.best, args.trial,
                 args.method, args.merged))
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("export", help=HELP,
                       description="Write one finished trial of EXPERIMENT into --out: LoRA as PEFT writes it "
                                   "(adapter_config.json + adapter_model.safetensors, head included, the base "
                                   "model recorded as its hub id), classifier-only, full fine-tuning and --merged "
                                   "as a transformers model with the study's label names; with the tokenizer and "
                                   "a model card (README.md).")
    p.add_argument("experiment", metavar="EXPERIMENT", help="the experiment directory (STORAGE/NAME), local or s3://")
    p.add_argument("--scenario", metavar="NAME|GROUP",
                   help="scenario name (see `lora-sweep plan`) or the report's group label, e.g. 'all r=8'")
    p.add_argument("--r", type=int, help="rank, when the scenario has several")
    p.add_argument("--method", help="LoRA method, when the scenario has several (e.g. dora, dora+rslora)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--repeat", type=int, help="repeat index (default 0)")
    pick.add_argument("--best", action="store_true",
                      help="without --scenario: the study's best group (best mean final primary metric over its "
                           "seeds), then its best trial; with --scenario: that scenario's best trial. The primary "
                           "metric (val_mcc for CoLA, val_f1 for MRPC, ...) is read on the selection split if the "
                           "study has one, else on the dev set (then optimistic: chosen on the reported set)")
    pick.add_argument("--trial", help="a trial name, e.g. upper-r8-lr1e-3-rep2")
    p.add_argument("--merged", action="store_true",
                   help="merge a LoRA trial's adapter into its base and write a complete transformers model (loads "
                        "without PEFT, with its label names; the base's size on disk)")
    p.add_argument("--out", required=True, help="new or empty directory to write")
    p.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune_jobs.export", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    return run_guarded(lambda a: a.func(a), parser.parse_args(["export", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
