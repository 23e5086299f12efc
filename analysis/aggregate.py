"""`lora-sweep analyze`: Ray Tune experiment directories -> trials.parquet + epochs.parquet + predictions.parquet.

    python -m analysis.aggregate EXPERIMENT [EXPERIMENT ...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from record.errors import EXIT_OK, check_output_dir, run_guarded
from record.fields import MAPPINGS, provenance_of
from record.metrics import FINAL, TRIAL_METRIC_COLUMNS, higher_is_better, is_diverged
from record.outcome import STOPPED, column_status, outcome
from record.predictions import PREDICTIONS_FILE
from record.versions import package_version

from .load import TrialRecord, read_experiment, split_config
from .schema import (
    ANALYSIS_VERSIONS_KEY,
    EPOCH_METRICS,
    EPOCHS_SCHEMA,
    PREDICTIONS_SCHEMA,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    TRIALS_SCHEMA,
)


def _last(results: list[dict], key: str):
    for row in reversed(results):
        if row.get(key) is not None:
            return row[key]
    return None


def _epochs(rec: TrialRecord) -> list[dict]:
    """The reports of finished epochs (a diverged trial's last report is not one)."""
    return [r for r in rec.results if not is_diverged(r)]


def trial_row(rec: TrialRecord) -> dict:
    """One row of trials.parquet."""
    known, extra = split_config(rec.config)
    for key in MAPPINGS:  # mappings are JSON text columns
        if isinstance(known.get(key), dict):
            known[key] = json.dumps(known[key], sort_keys=True)
    res, done = rec.results, _epochs(rec)  # every report (sizes, memory, node) / finished epochs (metrics)
    diverged = next((r for r in res if is_diverged(r)), None)
    final = done if diverged is None else []
    # only a tuning stage's scheduler stops trials; a cut result.json is a flagged problem, not a stop
    ended = outcome(rec.status, res[-1] if res else None, rec.config, complete=rec.problem is None)
    speeds = [r["train_samples_per_s"] for r in done if r.get("train_samples_per_s") is not None]
    peaks = [r["peak_memory_mb"] for r in res if r.get("peak_memory_mb") is not None]
    reserved = [r["peak_reserved_mb"] for r in res if r.get("peak_reserved_mb") is not None]
    held = [r["process_device_mb"] for r in res if r.get("process_device_mb") is not None]
    saved = [r["saved_activations_mb"] for r in done if r.get("saved_activations_mb") is not None]
    return {
        "experiment": rec.experiment, "trial_id": rec.trial_id, "trial_dir": rec.trial_dir,
        "status": column_status(rec.status, ended),
        "error": rec.error, "problem": rec.problem, **known,
        "config_extra": json.dumps(extra, sort_keys=True) if extra else None,
        **_metric_columns(final, done), "final_train_loss": _last(final, "train_loss"),
        "epochs_completed": len(done), "trainable_params": _last(res, "trainable_params"),
        "total_params": _last(res, "total_params"), "params_relative_pct": _last(res, "params_relative_pct"),
        "peak_memory_mb": max(peaks) if peaks else None, "memory_kind": _last(res, "memory_kind"),
        "peak_reserved_mb": max(reserved) if reserved else None, "process_device_mb": max(held) if held else None,
        "saved_activations_mb": max(saved) if saved else None, "trainable_state_mb": _last(done, "trainable_state_mb"),
        "compute_dtype": _last(done, "compute_dtype"),
        "mean_train_samples_per_s": statistics.fmean(speeds) if speeds else None,
        "total_time_s": _last(res, "time_total_s"), "hostname": _last(res, "hostname"),
        "node_ip": _last(res, "node_ip"), "node_id": _last(res, "node_id"), "num_restarts": rec.num_restarts,
        "last_checkpoint": rec.last_checkpoint, "diverged": diverged is not None,
        "diverged_reason": diverged.get("diverged_reason") if diverged else None,
        "stopped_at_epoch": len(done) if ended == STOPPED else None,
        **provenance_of(res),  # the training node's, from the first report of the run that reported last
    }


def _metric_columns(final: list[dict], done: list[dict]) -> dict:
    """final_* (the last of `final`, the finished epochs of a trial that did not diverge) and best_* (over `done`)
    of every split metric (record.metrics.TRIAL_METRIC_COLUMNS)."""
    out = {}
    for column, name, kind in TRIAL_METRIC_COLUMNS:
        if kind == FINAL:
            out[column] = _last(final, name)
            continue
        values = [r[name] for r in done if r.get(name) is not None]
        out[column] = (max(values) if higher_is_better(name) else min(values)) if values else None
    return out


def epoch_rows(rec: TrialRecord) -> list[dict]:
    """Rows of epochs.parquet for one trial (already one per epoch)."""
    head = {"experiment": rec.experiment, "trial_id": rec.trial_id, "scenario": rec.config.get("scenario"),
            "r": rec.config.get("r"), "repeat": rec.config.get("repeat"), "seed": rec.config.get("seed")}
    return [{**head, **{name: row.get(name) for name, _ in EPOCH_METRICS}} for row in _epochs(rec)]


def prediction_rows(records: list[TrialRecord]) -> pa.Table:
    """predictions.parquet: every record's predictions in record order, each under its (experiment, trial_id);
    built column by column (the keys as dictionary indices), never row by row: 10,000 trials x 872 rows."""
    having = [r for r in records if r.predictions is not None]
    lengths = np.array([r.predictions.num_rows for r in having], dtype=np.int64)
    keys = {}
    for name in ("experiment", "trial_id"):
        values = [getattr(r, name) for r in having]
        uniques, codes = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True) if values else \
            (np.array([], dtype=str), np.array([], dtype=np.int64))
        keys[name] = pa.DictionaryArray.from_arrays(pa.array(np.repeat(codes, lengths).astype(np.int32)),
                                                    pa.array(uniques.tolist(), pa.string()))
    rows = pa.concat_tables([r.predictions.replace_schema_metadata(None) for r in having]).combine_chunks() \
        if having else PREDICTIONS_SCHEMA.empty_table()
    return pa.table({**keys, **{f.name: rows.column(f.name) for f in PREDICTIONS_SCHEMA if f.name not in keys}},
                    schema=PREDICTIONS_SCHEMA)


def _versions() -> dict[str, str]:
    """The analysing machine's package versions (the training nodes' are each trial's provenance columns)."""
    found = {d: package_version(d) for d in ("lora-sweep", "ray", "pyarrow", "pandas", "transformers", "peft", "torch")}
    return {"python": sys.version.split()[0], **{d: v for d, v in found.items() if v is not None}}


def write_parquet_atomic(table: pa.Table, path: Path, **options) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file (`options`: pyarrow's)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", **options)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def aggregate(experiments: list[str], out_dir: str | Path) -> tuple[pa.Table, pa.Table, list[str]]:
    """Read all experiments, write trials.parquet, epochs.parquet and predictions.parquet (trials without a
    predictions file have no rows there) into `out_dir`; return the first two tables and notes.

    Everything is read and checked before anything is written, so bad input leaves no partial Parquet.
    """
    records: list[TrialRecord] = []
    for exp in experiments:
        records.extend(read_experiment(exp))
    records.sort(key=lambda r: (r.experiment, r.config.get("trial_name") or "", r.trial_id))
    studies = sorted({str(r.config.get("study")) for r in records if r.config.get("study")})
    meta = {SCHEMA_VERSION_KEY: SCHEMA_VERSION, "lora_sweep.experiments": json.dumps(
        sorted({r.experiment for r in records})), "lora_sweep.studies": json.dumps(studies),
        ANALYSIS_VERSIONS_KEY: json.dumps(_versions(), sort_keys=True)}
    trials = pa.Table.from_pylist([trial_row(r) for r in records], schema=TRIALS_SCHEMA).replace_schema_metadata(meta)
    epochs = pa.Table.from_pylist([row for r in records for row in epoch_rows(r)],
                                  schema=EPOCHS_SCHEMA).replace_schema_metadata(meta)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictions = prediction_rows(records).replace_schema_metadata(meta)
    write_parquet_atomic(trials, out / "trials.parquet")
    write_parquet_atomic(epochs, out / "epochs.parquet")
    # dictionary pages for the few-valued columns only: a score's values are nearly all distinct (measured on
    # 8.7 M rows: written in 0.56 s instead of 0.70, read in 0.20 s instead of 0.78, 32 MB instead of 37)
    write_parquet_atomic(predictions, out / PREDICTIONS_FILE,
                         use_dictionary=[f.name for f in PREDICTIONS_SCHEMA if f.name != "score"])
    notes = [f"{r.problem} (trial flagged in the `problem` column; the rest is analysed)" for r in records if r.problem]
    return trials, epochs, notes + [r.predictions_problem for r in records if r.predictions_problem]


def cmd_analyze(args: argparse.Namespace) -> int:
    check_output_dir(args.out)  # before any experiment is read: a file there is one line, not a traceback
    trials, epochs, notes = aggregate(args.experiments, args.out)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(summary_line(trials, epochs, Path(args.out)))
    return EXIT_OK


def summary_line(trials: pa.Table, epochs: pa.Table, out: Path, files: bool = True) -> str:
    """What `aggregate` wrote: trials by status, epoch and prediction rows, and the files (else their folder)."""
    statuses = trials.column("status").to_pylist()
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
    diverged = sum(trials.column("diverged").to_pylist())
    counts += f"; {diverged} diverged" if diverged else ""
    predicted = pq.read_metadata(out / PREDICTIONS_FILE).num_rows
    where = f"{out}/trials.parquet, {out}/epochs.parquet, {out}/{PREDICTIONS_FILE}" if files else f"{out}/"
    return f"{trials.num_rows} trials ({counts}), {epochs.num_rows} epoch rows, {predicted} prediction rows -> {where}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                   help="Ray Tune experiment directory (STORAGE/NAME), local or s3://...; several become one dataset "
                        "with an `experiment` column")
    p.add_argument("--out", required=True, help="directory for trials.parquet, epochs.parquet and predictions.parquet")


def register(sub) -> None:
    p = sub.add_parser("analyze", help="turn experiment directories into trials.parquet + epochs.parquet",
                       description="Read Ray Tune experiment directories (local or s3://) and write trials.parquet "
                                   "(one row per trial: config columns, final/best metrics, status, errors), "
                                   "epochs.parquet (one row per trial and epoch) and predictions.parquet (one row per "
                                   "trial and dev-set example: the last finished epoch's label, prediction and "
                                   "score). Query them with pandas or DuckDB.")
    add_arguments(p)
    p.set_defaults(func=cmd_analyze)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.aggregate", description=__doc__)
    add_arguments(parser)
    return run_guarded(cmd_analyze, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
