"""An experiment written before `tune_jobs` was split into rooms still resumes and analyses.

The fixture `fixtures/old_layout_experiment/` is what `python -m tune_jobs.sweep fixtures/old_layout_experiment.yaml
--max-concurrent 1` wrote at commit 2f1ad7f (flat `tune_jobs/`), with the driver killed while the second trial
(head-rep0) was running: upper-r2-rep0 finished, head-rep0 has its epoch-1 checkpoint. The finished trial's weights
were removed to keep the fixture small (nothing reads them on resume or analysis); nothing else was edited.
Tune's resume unpickles the searcher's saved state, which names `tune_jobs.sweep.trial_dirname`: that name has to
stay importable (tune_jobs/sweep/__init__.py). `tuner.pkl` names more of the old modules, but only
`Tuner.restore`, which lora-sweep does not use (a grown spec must be able to add trials), reads it.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from record.outcome import FINISHED
from tests.conftest import REPO

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures"


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().strip().splitlines()]


def test_experiment_of_the_flat_layout_resumes_from_its_checkpoint_and_analyses(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(FIXTURE / "old_layout_experiment", store / "old-layout")
    exp = store / "old-layout"
    finished = (exp / "upper-r2-rep0" / "result.json").read_text()
    head_first = lines_of(exp / "head-rep0" / "result.json")
    assert len(head_first) == 1  # killed after the running trial's first epoch

    out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(FIXTURE / "old_layout_experiment.yaml"),
                          "--storage", str(store), "--name", "old-layout", "--resume"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming" in out.stdout and "2 trials (2 TERMINATED)" in out.stdout
    assert (exp / "upper-r2-rep0" / "result.json").read_text() == finished  # kept, not rerun
    head = lines_of(exp / "head-rep0" / "result.json")
    assert [r["epoch"] for r in head] == [1, 2] and head[0] == head_first[0]  # continued from its checkpoint

    analyzed = subprocess.run([sys.executable, "-m", "analysis.aggregate", str(exp), "--out", str(tmp_path / "a")],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert analyzed.returncode == 0, analyzed.stdout[-2000:] + analyzed.stderr[-2000:]
    trials = pq.read_table(tmp_path / "a" / "trials.parquet").to_pandas()
    assert sorted(trials["trial_name"]) == ["head-rep0", "upper-r2-rep0"]
    assert trials["status"].eq(FINISHED).all() and trials["final_val_accuracy"].between(0, 1).all()
