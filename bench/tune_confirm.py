"""The full grid against tune-then-confirm on the same study (issue 21, item 3): what each spent, what each chose.

Runs (or reads) two experiments of one spec: the full grid (every rate of every rank with every seed; the report
chooses each rank's rate afterwards on the selection split, `report --select learning_rate`) and tune-then-confirm
(a profile with `select:`; ASHA on the selection split within each rank). Prints, for each: trials, trial-epochs,
wall time, the rate chosen per rank, and the dev verdicts between ranks; then whether choices and verdicts agree.

    python bench/tune_confirm.py --run             # rank.yaml, profiles demo and demo_confirm, on this CPU
    python bench/tune_confirm.py --full EXP --staged EXP   # two finished experiments
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.aggregate import aggregate  # noqa: E402
from analysis.compare import reversed_verdict  # noqa: E402
from analysis.report import ReportOptions, load, read_out  # noqa: E402
from record.outcome import STOPPED  # noqa: E402


def spent(experiment: Path) -> dict:
    """Trials, trial-epochs (each epoch reported once in result.json) and wall time from first start to last report."""
    trials = epochs = 0
    starts, ends = [], []
    for result in experiment.glob("*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not reports:
            continue
        trials += 1
        epochs += sum(1 for r in reports if not r.get("diverged"))
        starts.append(reports[0]["timestamp"] - reports[0]["time_this_iter_s"])
        ends.append(reports[-1]["timestamp"])
    return {"trials": trials, "trial_epochs": epochs, "wall_min": (max(ends) - min(starts)) / 60 if ends else 0.0}


def readout(experiment: Path, select: tuple[str, ...]):
    with tempfile.TemporaryDirectory() as out:
        aggregate([str(experiment)], out)
        trials, epochs = load(Path(out))
    return read_out(trials, epochs, ReportOptions(select=select))


def choices(ro) -> dict[str, str]:
    """Per placement, the value chosen (rank -> learning rate)."""
    chosen = ro.selection[ro.selection["chosen"]]
    return {rank_of(row["candidate"]): f"{row['learning_rate']:g}" for _, row in chosen.iterrows()}


def rank_of(group: str) -> str:
    return next((part for part in group.split() if part.startswith("r=")), group)


def verdicts(ro) -> dict[tuple[str, str], str]:
    """Verdict per pair of ranks, read in one fixed direction (lower rank first; the chosen rate left out)."""
    out = {}
    for _, row in ro.comparisons.iterrows():
        a, b = rank_of(row["a"]), rank_of(row["b"])
        key = tuple(sorted((a, b), key=lambda r: float(r.removeprefix("r=")) if r[2:].isdigit() else 0.0))
        out[key] = row["verdict"] if key == (a, b) else reversed_verdict(row["verdict"])
    return out


def run(spec: Path, profile: str, storage: Path, name: str) -> Path:
    cmd = [sys.executable, "-m", "tune_jobs.sweep", str(spec), "--profile", profile, "--storage", str(storage),
           "--name", name]
    subprocess.run(cmd, cwd=REPO, check=True)
    return storage / name


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run both sweeps first (rank.yaml demo and demo_confirm)")
    p.add_argument("--spec", default=str(REPO / "tune_jobs/experiments/rank.yaml"))
    p.add_argument("--storage", default=str(Path(tempfile.gettempdir()) / "lora-sweep-tune-confirm"))
    p.add_argument("--full", help="a finished full-grid experiment")
    p.add_argument("--staged", help="a finished tune-then-confirm experiment")
    args = p.parse_args()
    full, staged = Path(args.full or ""), Path(args.staged or "")
    if args.run:
        full = run(Path(args.spec), "demo", Path(args.storage), "full")
        staged = run(Path(args.spec), "demo_confirm", Path(args.storage), "staged")
    if not (full.is_dir() and staged.is_dir()):
        p.error("give --run, or --full and --staged experiment folders")
    ro_full, ro_staged = readout(full, ("learning_rate",)), readout(staged, ())
    rows = []
    for label, exp, ro in (("full grid, then report --select", full, ro_full),
                           ("tune, then confirm", staged, ro_staged)):
        cost = spent(exp)
        stopped = int(ro.trials["status"].eq(STOPPED).sum())
        rows.append((label, cost, choices(ro), verdicts(ro), stopped, ro))
        print(f"{label}: {cost['trials']} trials ({stopped} stopped early), {cost['trial_epochs']} trial-epochs, "
              f"{cost['wall_min']:.1f} min wall")
        print("  chosen learning rate per rank: " + ", ".join(f"{k}: {v}" for k, v in rows[-1][2].items()))
        means = ro.summary.set_index("group")["mean"]
        print("  dev mean per rank (the chosen rate's seeds): "
              + ", ".join(f"{rank_of(g)} {m:.4f}" for g, m in means.items()))
    (_, c1, ch1, v1, _, _), (_, c2, ch2, v2, _, _) = rows
    same_choice = [k for k in ch1 if ch1.get(k) == ch2.get(k)]
    shared = sorted(set(v1) & set(v2))
    agree = [k for k in shared if v1[k] == v2[k]]
    print(f"trial-epochs: {c2['trial_epochs']} / {c1['trial_epochs']} = "
          f"{c2['trial_epochs'] / c1['trial_epochs']:.2f}x; "
          f"wall: {c2['wall_min'] / c1['wall_min']:.2f}x")
    print(f"choices agree for {len(same_choice)} of {len(ch1)} ranks"
          + (f" (differ: {', '.join(k for k in ch1 if k not in same_choice)})" if len(same_choice) < len(ch1) else ""))
    counts = {d: sorted(set(v.values())) for d, v in (("full", v1), ("staged", v2))}
    print(f"verdicts: full {dict((x, list(v1.values()).count(x)) for x in counts['full'])}, staged "
          f"{dict((x, list(v2.values()).count(x)) for x in counts['staged'])}")
    print(f"verdicts agree for {len(agree)} of {len(shared)} rank pairs"
          + "".join(f"\n  {a} vs {b}: full {v1[(a, b)]!r}, staged {v2[(a, b)]!r}"
                    for a, b in shared if (a, b) not in agree))
    return 0


if __name__ == "__main__":
    sys.exit(main())
