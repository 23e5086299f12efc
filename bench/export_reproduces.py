"""Export a finished trial and check, in a clean Python process with only PEFT/transformers, that the exported
adapter reproduces the trial's final val_accuracy on the dev split.

    python bench/export_reproduces.py EXPERIMENT --scenario NAME [--best | --repeat K] \
[--dev ../shared/data/sst2/dev.tsv]

Prints both accuracies and their difference (target: 0, the same predictions on every dev row).
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

from tune_jobs.cli import main as cli  # noqa: E402

SCORE = """
import csv, json, sys, torch
from transformers import AutoTokenizer
from peft import AutoPeftModelForSequenceClassification
out, dev, bf16, batch = sys.argv[1], sys.argv[2], sys.argv[3] == "bf16", int(sys.argv[4])
with open(dev, encoding="utf-8") as fh:
    rows = list(csv.reader(fh, delimiter="\\t", quoting=csv.QUOTE_NONE))[1:]
model = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
tok = AutoTokenizer.from_pretrained(out)
correct = 0
# as the trial evaluated: longest rows first, its eval batch size, its compute dtype (bf16 autocast or fp32)
lengths = [len(tok(r[0], truncation=True)["input_ids"]) for r in rows]
rows = [rows[i] for i in sorted(range(len(rows)), key=lambda i: -lengths[i])]
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        enc = tok([r[0] for r in part], truncation=True, padding=True, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor([int(r[1]) for r in part])).sum())
print(json.dumps({"accuracy": correct / len(rows), "rows": len(rows)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment")
    ap.add_argument("--scenario", required=True)
    ap.add_argument("--best", action="store_true")
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--dev", default=str(REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"))
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="export-check-")) / "adapter"
    flags = ["--best"] if args.best else ["--repeat", str(args.repeat or 0)]
    assert cli(["export", args.experiment, "--scenario", args.scenario, *flags, "--out", str(out)]) == 0
    trial = json.loads((out / "lora_sweep_trial.json").read_text())
    dtype = trial["final"].get("compute_dtype") or "fp32"
    res = subprocess.run([sys.executable, "-c", SCORE, str(out), args.dev, dtype,
                          str(trial["config"]["eval_batch_size"])], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())  # a clean process, outside the repository
    if res.returncode != 0:
        sys.exit(res.stderr[-2000:])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    want = trial["final"]["val_accuracy"]
    print(f"trial {trial['config']['trial_name']}: final val_accuracy {want:.4f}; exported adapter in a clean "
          f"process ({dtype}): {got['accuracy']:.4f} on {got['rows']} dev rows; "
          f"difference {got['accuracy'] - want:+.4f}")


if __name__ == "__main__":
    main()
