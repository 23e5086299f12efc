"""Cluster configs (validated like `ray up` does, offline), real job submission, multi-node, node and driver loss."""

import contextlib
import copy
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, SST2_DIR, tiny_spec

SCENARIOS = ("scenarios:\n  - {name: upper, layers: upper, components: all}\n"
             "  - {name: vup, layers: all, components: v+up}\n")


def validate(cfg: dict) -> None:
    """What `ray up` runs before it contacts a cloud (private API; ray is pinned in pyproject.toml)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_pass_ray_validation(name):
    validate(yaml.safe_load((REPO / name).read_text()))


def test_aws_config_shape():
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types["head"]["resources"]["GPU"] == 0
    assert any(t["node_config"]["InstanceType"] == "g5.xlarge" for t in types.values())
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in types.values())
    for t in types.values():
        assert all(isinstance(v, int) for v in t["resources"].values())
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])


def test_aws_nodes_boot_an_image_that_fits_the_pins_and_workers_get_only_s3():
    import json
    import subprocess

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for name, t in cfg["available_node_types"].items():
        image = t["node_config"]["ImageId"]
        assert image != "latest_dlami", name  # Ray 2.60 maps it to an Ubuntu 18.04 / CUDA 11.2 image
        # the Ubuntu 24.04 image (python3 3.12): its 22.04 variant's Python 3.10 is below what the pins need
        assert image == AMI, name
        if t["resources"].get("GPU"):
            assert t["node_config"]["IamInstanceProfile"] == {"Name": "lora-sweep-worker"}
    policy = json.loads((REPO / "cluster" / "worker-s3-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions and all(a.startswith("s3:") for a in actions)
    data = {st["Sid"]: st for st in policy["Statement"] if "LORA_SWEEP_DATA_BUCKET" in json.dumps(st)}
    assert data["ReadData"]["Action"] == ["s3:GetObject"]  # the data prefix is read, never written
    assert data["ReadData"]["Resource"].endswith("LORA_SWEEP_DATA_PREFIX/*")
    assert data["ListData"]["Condition"]["StringLike"]["s3:prefix"][1] == "LORA_SWEEP_DATA_PREFIX/*"
    script = REPO / "cluster" / "create-worker-profile.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0 and "lora-sweep-worker" in script.read_text()


@pytest.mark.parametrize("damage,match", [
    (lambda c: c.__setitem__("availble_node_types", c.pop("available_node_types")), "availble_node_types"),
    (lambda c: c["available_node_types"]["gpu_a10g_spot"]["resources"].__setitem__("GPU", 0.25), "integer"),
    (lambda c: c["available_node_types"]["head"].pop("node_config"), "node_config"),
])
def test_broken_aws_config_fails_validation(damage, match):
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    damage(cfg)
    with pytest.raises(Exception, match=match):
        validate(cfg)


def test_onprem_config_must_not_declare_node_types():
    cfg = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    cfg["available_node_types"] = {"w": {"resources": {"CPU": 1}, "node_config": {}}}
    with pytest.raises(Exception):
        validate(cfg)


START_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_every_node_gets_the_token_and_starts_ray_with_token_auth(name):
    cfg = yaml.safe_load((REPO / name).read_text())
    home = f"/home/{cfg['auth']['ssh_user']}"
    # the laptop's token, Ray's default path
    assert cfg["file_mounts"][f"{home}/.ray/auth_token"] == "~/.ray/auth_token"
    assert not [k for t in cfg.get("available_node_types", {}).values() for k in t
                if "setup_commands" in k or "start_ray_commands" in k]  # no node type replaces the commands below
    starts = [c for key in START_KEYS for c in cfg[key] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c.split("ray start")[0] for c in starts), starts
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["setup_commands"])  # ray exec/attach shells
    assert "chmod 600 ~/.ray/auth_token" in cfg["setup_commands"]
    text = (REPO / name).read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and "RAY_AUTH_TOKEN=" not in text


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_ray_up_reads_the_token_from_the_laptops_home(name, tmp_path, monkeypatch):
    """What `ray up` hashes before syncing file mounts: the token file it will copy, from $HOME/.ray/auth_token."""
    from ray.autoscaler._private.util import hash_runtime_conf, prepare_config

    cfg = prepare_config(yaml.safe_load((REPO / name).read_text()))
    monkeypatch.chdir(REPO)  # the checkout mount is "."
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"\.ray/auth_token"):
        hash_runtime_conf(cfg["file_mounts"], None, cfg)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("0" * 64)
    first = hash_runtime_conf(cfg["file_mounts"], None, cfg, generate_file_mounts_contents_hash=True)
    (tmp_path / ".ray" / "auth_token").write_text("1" * 64)
    assert hash_runtime_conf(cfg["file_mounts"], None, cfg, generate_file_mounts_contents_hash=True)[1] != first[1]


PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")


def shell_commands(cfg: dict) -> list[str]:
    """Every command a cluster config runs: each `*_commands` list, at the top and in any node type."""
    holders = [cfg, *cfg.get("available_node_types", {}).values()]
    return [c for h in holders for k, cmds in h.items() if k.endswith("_commands") for c in cmds or []]


def constraints_of(segment: str, cwd: str | None, mounts: dict) -> Path | None:
    """The local file a `pip install` segment's -c/--constraint names, through the checkout's file mount."""
    import posixpath
    import shlex

    words = shlex.split(segment)
    named = [b for a, b in zip(words, words[1:]) if a in ("-c", "--constraint")]
    named += [w.split("=", 1)[1] for w in words if w.startswith(("-c=", "--constraint="))]
    if len(named) != 1 or not (named[0].startswith("/") or cwd):
        return None
    remote = posixpath.normpath(posixpath.join(cwd or "/", named[0]))
    for dest, src in mounts.items():
        if src == "." and remote.startswith(dest.rstrip("/") + "/"):
            return REPO / remote[len(dest.rstrip("/")) + 1:]
    return None


def unconstrained_pip_installs(cfg: dict) -> list[str]:
    """The commands with a `pip install` that does not name the checkout's constraints.txt (where it runs)."""
    bad = []
    for command in shell_commands(cfg):
        cwd = None
        for segment in (s.strip() for s in re.split(r"&&|\|\||;|\(|\)", command)):
            if segment.startswith("cd "):
                cwd = segment[3:].strip()
            elif PIP_INSTALL.search(segment) and constraints_of(segment, cwd, cfg["file_mounts"]) != \
                    REPO / "constraints.txt":
                bad.append(command)
    return bad


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_every_pip_install_on_the_nodes_stays_in_the_tested_set(name):
    cfg = yaml.safe_load((REPO / name).read_text())
    assert any(PIP_INSTALL.search(c) for c in shell_commands(cfg))
    assert unconstrained_pip_installs(cfg) == []
    torch_pins = set(re.findall(r"torch==([\w.+]+)", " ".join(shell_commands(cfg))))
    assert torch_pins == set(re.findall(r"torch==([\w.+]+)", (REPO / ".ci" / "run").read_text())), torch_pins
    broken = copy.deepcopy(cfg)  # a line added later without the constraints fails, wherever it is
    broken["setup_commands"].append("python3 -m pip install -q wandb")
    broken.setdefault("worker_setup_commands", []).append("cd /tmp && pip3 install -e . -c constraints.txt")
    broken.setdefault("head_setup_commands", []).append("pip install -U ray --constraint /etc/other.txt")
    assert len(unconstrained_pip_installs(broken)) == 3


AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
# The python3 of AWS's "Deep Learning Base OSS Nvidia Driver GPU AMI" by Ubuntu release (python_location in AWS's
# release notes: /usr/bin/python3.12 on 24.04, /usr/bin/python3.10 on 22.04).
AMI_PYTHON = {"ubuntu-24.04": "3.12", "ubuntu-22.04": "3.10"}
VENV = "~/lora-sweep-venv"
VENV_PATH = "export PATH=$HOME/lora-sweep-venv/bin:$PATH"
VERSION_FLOOR = re.compile(r"sys\.version_info\s*(?:<|>=)\s*\((\d+),\s*(\d+)\)")


def pinned_requires_python() -> dict[str, str]:
    """Requires-Python of each release constraints.txt pins, from its installed metadata (the tests run in the
    tested set: `-c constraints.txt`; torch, which the cluster files pin, too). Skips where this environment
    has other releases: their metadata says nothing about the pins."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    pins["torch"] = "2.13.0"
    found, other = {}, []
    for name, version in pins.items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            other.append(f"{name} (not installed)")
            continue
        if dist.version.split("+")[0] != version:
            other.append(f"{name} {dist.version} (pinned {version})")
        else:
            found[name] = dist.metadata.get("Requires-Python") or ""
    if other:
        pytest.skip("this environment is not the tested set: " + ", ".join(other))
    return found


def python_floor(requires: dict[str, str]) -> tuple[int, int]:
    """The oldest Python 3 minor version every pinned release accepts."""
    from packaging.specifiers import SpecifierSet

    for minor in range(8, 30):
        if all(SpecifierSet(spec).contains(f"3.{minor}.0") for spec in requires.values()):
            return 3, minor
    raise AssertionError(f"no Python accepts every pin: {requires}")


def asserted_floor(cfg: dict) -> tuple[int, int]:
    """The one Python version the setup commands hold every node to (`sys.version_info >= / < (3, N)`)."""
    floors = {tuple(map(int, m)) for c in cfg["setup_commands"] for m in VERSION_FLOOR.findall(c)}
    assert len(floors) == 1, floors
    return floors.pop()


def test_the_pins_need_python_3_11():
    """What the cluster files and the README say (numpy 2.4, pandas 3, scipy 1.17 ... require >= 3.11)."""
    requires = pinned_requires_python()
    assert python_floor(requires) == (3, 11)
    assert requires["numpy"] == ">=3.11" and requires["pandas"] == ">=3.11"


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_the_nodes_python_fits_every_pin_and_the_project(name):
    import tomllib

    from packaging.specifiers import SpecifierSet

    requires = pinned_requires_python()
    requires["lora-sweep"] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    cfg = yaml.safe_load((REPO / name).read_text())
    floor = asserted_floor(cfg)
    assert floor >= python_floor(requires), f"{name} lets a node with Python {floor} install pins needing more"
    nodes = ["%d.%d" % floor]  # the oldest Python the setup lets through
    for t in cfg.get("available_node_types", {}).values():  # and the python3 of the image each node boots
        release = re.search(r"ubuntu-\d\d\.\d\d", t["node_config"]["ImageId"]).group()
        assert tuple(map(int, AMI_PYTHON[release].split("."))) >= floor, f"{release}'s python3 fails the check"
        nodes.append(AMI_PYTHON[release])
    for python in nodes:
        bad = {pkg: spec for pkg, spec in requires.items() if not SpecifierSet(spec).contains(f"{python}.0")}
        assert not bad, f"{name}: Python {python} does not satisfy {bad}"


def venv_pip(segment: str) -> bool:
    return bool(re.search(r"(^|\s)" + re.escape(VENV) + r"/bin/python -m pip install\b", segment))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_nodes_install_into_the_venv_and_run_ray_from_it(name):
    cfg = yaml.safe_load((REPO / name).read_text())
    setup = cfg["setup_commands"]
    made = next(i for i, c in enumerate(setup) if re.search(r"-m venv --clear " + re.escape(VENV) + r";", c))
    installs = [i for i, c in enumerate(setup) if PIP_INSTALL.search(c)]
    assert installs and min(installs) > made
    for command in shell_commands(cfg):  # every pip install goes into the venv: never the system's python3
        for segment in re.split(r"&&|\|\||;|\(|\)", command):
            assert not PIP_INSTALL.search(segment) or venv_pip(segment.strip()), segment
    assert f"grep -q 'lora-sweep-venv/bin' ~/.bashrc || echo '{VENV_PATH}' >> ~/.bashrc" in setup
    for key in START_KEYS:  # `ray` and, through the raylet's PATH, a job's `python`
        assert cfg[key] and all(c.startswith(VENV_PATH + " ") for c in cfg[key]), cfg[key]
    header = (REPO / name).read_text().split("cluster_name:", 1)[0]
    assert "python -m tune_jobs.sweep" in header and "lora-sweep-venv" in header


def fake_commands(folder: Path, **scripts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for command, body in scripts.items():
        (folder / command).write_text("#!/usr/bin/env bash\n" + body + "\n")
        (folder / command).chmod(0o755)
    return folder


def node_shell(command: str, home: Path, path: str) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": path, "RAY_HEAD_IP": "10.0.0.1", "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)


def test_aws_setup_stops_an_old_python_in_one_line(tmp_path):
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    check = next(c for c in cfg["setup_commands"] if VERSION_FLOOR.search(c) and "venv" not in c)
    bin_ = fake_commands(tmp_path / "bin", python3=f'exec {sys.executable} "$@"')
    path = f"{bin_}:/usr/bin:/bin"
    assert node_shell(check, tmp_path, path).returncode == 0  # this Python (the tested one) passes
    old = node_shell(VERSION_FLOOR.sub("sys.version_info < (3, 99)", check), tmp_path, path)
    assert old.returncode == 1 and old.stdout == "" and len(old.stderr.strip().splitlines()) == 1, old.stderr
    assert old.stderr.startswith("lora-sweep needs Python >= 3.11 on every node") and "Ubuntu 24.04" in old.stderr


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_the_venv_command_makes_it_once_and_bashrc_and_start_commands_use_it(name, tmp_path):
    cfg = yaml.safe_load((REPO / name).read_text())
    make = next(c for c in cfg["setup_commands"] if "-m venv" in c)
    sudo_log = tmp_path / "sudo.log"
    bin_ = fake_commands(tmp_path / "bin", python3=f'exec {sys.executable} "$@"',
                         sudo=f'echo "$@" >> {sudo_log}; exit 1', **{"python3.13": "exit 127", "python3.12": "exit 127",
                                                                   "python3.11": "exit 127"})
    home = tmp_path / "home"
    home.mkdir()
    path = f"{bin_}:/usr/bin:/bin"
    for _ in range(2):  # the second run finds it and leaves it alone
        made = node_shell(make, home, path)
        assert made.returncode == 0, made.stderr
    assert not sudo_log.exists()  # this Python has its venv module: no apt-get
    pip = subprocess.run([str(home / "lora-sweep-venv" / "bin" / "python"), "-m", "pip", "--version"],
                         capture_output=True, text=True)
    assert pip.returncode == 0 and "lora-sweep-venv" in pip.stdout
    bashrc = next(c for c in cfg["setup_commands"] if "lora-sweep-venv/bin' ~/.bashrc" in c)
    for _ in range(2):
        assert node_shell(bashrc, home, path).returncode == 0
    assert (home / ".bashrc").read_text().count("lora-sweep-venv") == 1
    shell_path = node_shell("source ~/.bashrc; echo $PATH", home, path).stdout
    assert shell_path.startswith(f"{home}/lora-sweep-venv/bin:")
    # The start commands run the venv's `ray`, not another one on PATH (pip --user's ~/.local/bin).
    fake_commands(home / "lora-sweep-venv" / "bin", ray='echo "venv ray $1 auth=$RAY_AUTH_MODE"')
    fake_commands(home / ".local" / "bin", ray="echo wrong ray; exit 1")
    for key in START_KEYS:
        for command in cfg[key]:
            out = node_shell(command, home, f"{home}/.local/bin:{path}")
            assert out.returncode == 0 and out.stdout.startswith("venv ray "), (command, out.stdout, out.stderr)


def test_onprem_setup_without_a_recent_python_is_one_line_naming_what_to_install(tmp_path):
    cfg = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    make = next(c for c in cfg["setup_commands"] if "-m venv" in c)
    old = "import sys; sys.exit(1)"  # a python3 older than 3.11, or one without its venv module
    bin_ = fake_commands(tmp_path / "bin", **{p: f"exec {sys.executable} -c '{old}'"
                                            for p in ("python3", "python3.11", "python3.12", "python3.13")})
    out = node_shell(make, tmp_path, f"{bin_}:/usr/bin:/bin")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith("lora-sweep needs Python >= 3.11 with its venv module on every machine")
    assert "install python3.12 and python3.12-venv" in lines[0] and not (tmp_path / "lora-sweep-venv").exists()


def test_no_token_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [f for f in tracked.stdout.splitlines() if Path(f).name.endswith("auth_token")]
    for path in ("auth_token", "cluster/auth_token", "prod.auth_token"):  # --working-dir uploads skip these too
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path


def _upload_dir(tmp_path: Path) -> Path:
    """A directory laid out like Ray's unpacked `--working-dir` (what a job's driver runs in)."""
    upload = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    shutil.copytree(REPO / "tune_jobs" / "experiments", upload / "tune_jobs" / "experiments")
    return upload


def _run_in(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "tune_jobs.sweep", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_relative_dataset_inside_a_job_upload_is_one_line_naming_the_fix(tmp_path):
    upload = _upload_dir(tmp_path)
    spec = upload / "spec.yaml"
    spec.write_text("name: rel\nmodel: minilm-l6\ndata: {dataset: ../shared/data/sst2}\n"
                    "scenarios:\n  - {name: a, layers: all, components: v}\n")
    out = _run_in(upload, "spec.yaml", "--storage", str(tmp_path / "store"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("error: data.dataset: local dataset directory not found") and "'../shared/data/sst2'" in line
    assert str(upload.parent / "shared" / "data" / "sst2") in line and "uploaded working directory" in line
    assert "GLUE_DIR" in line and "--runtime-env-json" in line and "NFS" in line
    assert not (tmp_path / "store").exists()


def test_storage_inside_a_job_upload_is_refused_before_ray_starts(tmp_path, sst2_dir):
    upload = _upload_dir(tmp_path)
    spec = upload / "spec.yaml"
    spec.write_text(f"name: st\nmodel: minilm-l6\ndata: {{dataset: {sst2_dir}}}\n"
                    "scenarios:\n  - {name: a, layers: all, components: v}\n")
    for argv in ([], ["--storage", "results"]):
        out = _run_in(upload, str(spec), *argv)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
        assert (lines[0].startswith("error: --storage: resolved from the job's uploaded working directory to ")
                and "uploaded working directory" in lines[0])
        assert "s3://" in lines[0] and "$PWD/lora_sweep_results" in lines[0]
    assert not list(upload.glob("lora_sweep_results*")) and not (upload / "results").exists()


def test_job_upload_detection_and_job_env_vars(tmp_path, monkeypatch):
    from tune_jobs.data.job_upload import job_env_vars, resolved_inside_upload, uploaded_working_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert uploaded_working_dir() is None and resolved_inside_upload("../data") is None and job_env_vars() == {}
    upload = _upload_dir(tmp_path)
    monkeypatch.chdir(upload)
    assert uploaded_working_dir() == upload
    assert resolved_inside_upload("/work/data") is None  # an absolute path elsewhere is the user's to check
    assert resolved_inside_upload("tune_jobs/experiments") == upload / "tune_jobs" / "experiments"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {"GLUE_DIR": "/g"}}}))
    assert job_env_vars() == {"GLUE_DIR": "/g"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RAY_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s")  # Ray's own log lines in `ray job logs`
_AUTH_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def fresh_machine_env(tmp_path: Path) -> dict:
    """The environment of a user on a fresh machine: a HOME of its own (no ~/.ray/auth_token yet, the developer's
    untouched), no Ray address or auth settings, and this interpreter's `ray` / `lora-sweep` first on PATH."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in _AUTH_VARS}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def head_ports() -> dict[str, int]:
    """Ports of a test head: Ray's fixed defaults (6379, 8265, 52365, 10001) may belong to another Ray here."""
    return {"port": free_port(), "dashboard-port": free_port(), "dashboard-agent-listen-port": free_port(),
            "ray-client-server-port": free_port()}


def wait_for_job_server(address: str, agent_port: int, env: dict, timeout_s: float = 180) -> None:
    """Until the job server answers (with the token) and the head's job agent listens: `ray start` returns
    before the agent, and a submit meanwhile fails with "No available agent"."""
    from ray._private.services import get_node_ip_address

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        ok = subprocess.run(["ray", "job", "list", "--address", address], env=env, capture_output=True)
        if ok.returncode == 0:
            try:
                socket.create_connection((get_node_ip_address(), agent_port), timeout=2).close()
                return
            except OSError:
                pass
        time.sleep(1)
    raise AssertionError(f"the job server at {address} did not come up: {ok.stderr.decode()[-500:]}")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of one process group, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def stop_own_head(leader: subprocess.Popen, temp_dir: str, grace_s: float = 30) -> None:
    """Stop the Ray processes a test started (its own session), never another Ray on the machine (`ray stop`
    would stop every Ray of this user). SIGTERM, then SIGKILL after `grace_s` (gcs_server may ignore SIGTERM)."""
    pgid = leader.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _group_members(pgid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and _group_members(pgid):
            if leader.poll() is None:
                try:
                    leader.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.5)
        if not _group_members(pgid):
            break
    leader.wait(timeout=10)
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _reads(p).count(temp_dir)]
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head outlived it: {left}"


def _reads(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def token_head(env: dict):
    """A loopback Ray head with token authentication, as a user starts one: `ray get-auth-token --generate`, then
    `ray start --head` with RAY_AUTH_MODE=token. Yields the job server's address; stops only this head."""
    subprocess.run(["ray", "get-auth-token", "--generate"], env=env, capture_output=True, check=True)
    token = Path(env["HOME"]) / ".ray" / "auth_token"
    assert len(token.read_text().strip()) >= 32
    ports = head_ports()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", *(f"--{k}={v}" for k, v in ports.items())],
        env=dict(env, RAY_AUTH_MODE="token"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        address = f"http://127.0.0.1:{ports['dashboard-port']}"
        wait_for_job_server(address, ports["dashboard-agent-listen-port"], dict(env, RAY_AUTH_MODE="token"))
        yield address
    finally:
        stop_own_head(head, temp_dir)


def ray_job(env: dict, address: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job SUBCOMMAND --address ADDRESS ...` with the token mode on, as the README's commands run."""
    return subprocess.run(["ray", "job", argv[0], "--address", address, *argv[1:]],
                          env=dict(env, RAY_AUTH_MODE="token"), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ray_job_submit_with_token_auth_runs_a_sweep_then_analyze(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS)
    (tmp_path / "rel").mkdir()
    relative = tiny_spec(tmp_path / "rel", tiny_bert_dir, SCENARIOS, data={"dataset": "../shared/data/sst2"})
    env = fresh_machine_env(tmp_path)
    # The job's own env_vars (which Ray gives the driver and every trial) include ones the driver also forwards
    # to its trials: naming one twice made the driver's ray.init fail ("Failed to merge the Job's runtime env").
    runtime_env = json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1", "GLUE_DIR": str(SST2_DIR.parent)}})
    with token_head(env) as address:
        denied = subprocess.run(["ray", "job", "list", "--address", address], env=env, capture_output=True, text=True)
        assert denied.returncode != 0 and "Missing authentication token" in denied.stdout + denied.stderr
        wrong = subprocess.run(["ray", "job", "list", "--address", address], capture_output=True, text=True,
                               env=dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32))
        assert wrong.returncode != 0 and "invalid or incorrect" in wrong.stdout + wrong.stderr

        sub = ray_job(env, address, "submit", "--submission-id", "tiny", "--no-wait", "--working-dir", str(REPO),
                      "--runtime-env-json", runtime_env, "--", "python", "-m", "tune_jobs.sweep", str(spec),
                      "--storage", str(tmp_path / "store"), "--name", "job")
        assert sub.returncode == 0, sub.stdout[-2000:] + sub.stderr[-2000:]
        logs = ray_job(env, address, "logs", "--follow", "tiny")
        status = ray_job(env, address, "status", "tiny")
        assert "Job 'tiny' succeeded" in status.stdout, logs.stdout[-3000:] + status.stdout[-1000:]
        assert "2 trials (2 TERMINATED)" in logs.stdout

        # A relative dataset path resolves inside the job's uploaded working directory: one line, before any trial.
        sub = ray_job(env, address, "submit", "--submission-id", "rel", "--no-wait", "--working-dir", str(REPO), "--",
                      "python", "-m", "tune_jobs.sweep", str(relative), "--storage", str(tmp_path / "store2"))
        assert sub.returncode == 0, sub.stderr[-2000:]
        logs = ray_job(env, address, "logs", "--follow", "rel")
        assert "Job 'rel' failed" in ray_job(env, address, "status", "rel").stdout
        after = logs.stdout.split("Running entrypoint for job rel:", 1)[1].splitlines()[1:]
        driver = list(itertools.takewhile(lambda line: not RAY_LOG_LINE.match(line), after))  # until the CLI's banner
        lines = [line for line in driver if line.strip()]
        assert len(lines) == 1, logs.stdout
        assert lines[0].startswith("error: data.dataset: local dataset directory not found: resolved from the "
                                   "job's uploaded working directory to /tmp/")
        assert ("runtime_resources/working_dir_files/shared/data/sst2" in lines[0]
                and "'../shared/data/sst2'" in lines[0])
        assert "GLUE_DIR" in lines[0] and not (tmp_path / "store2").exists()
    res = subprocess.run([sys.executable, "-m", "analysis.aggregate", str(tmp_path / "store" / "job"), "--out",
                          str(tmp_path / "pq")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas()
    assert sorted(trials["trial_name"]) == ["upper-r4-rep0", "vup-r4-rep0"] and (trials["status"] == "TERMINATED").all()


LOCAL_CLUSTER_PAGE = REPO / "docs" / "cluster.md"
LOCAL_CLUSTER_MARKER = "<!-- docs test: tests/test_cluster.py::test_local_cluster_block_runs"


def local_cluster_block() -> str:
    """The fenced bash block after the marker comment in docs/cluster.md: the local-cluster commands, as a user runs
    them."""
    text = LOCAL_CLUSTER_PAGE.read_text()
    assert text.count(LOCAL_CLUSTER_MARKER) == 1, "docs/cluster.md lost the marker of its local-cluster block"
    after = text.split(LOCAL_CLUSTER_MARKER, 1)[1].split("-->", 1)[1]
    assert after.lstrip("\n").startswith("```bash\n")
    return after.split("```bash\n", 1)[1].split("\n```", 1)[0] + "\n"


def test_local_cluster_block_is_the_token_flow():
    """Checked on every run (the slow test below runs it): token made and used, data and storage for a job."""
    block = local_cluster_block()
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands[0].startswith("ray get-auth-token --generate") and "export RAY_AUTH_MODE=token" in commands
    assert commands.index("export RAY_AUTH_MODE=token") < next(i for i, c in enumerate(commands) if "ray start" in c)
    assert "--runtime-env-json" in block and "GLUE_DIR" in block and '--storage "$PWD/' in block
    assert "ray job logs" in block and "--follow" in block and "lora-sweep analyze" in block
    assert commands[-1] == "ray stop"
    assert subprocess.run(["bash", "-n"], input=block, text=True).returncode == 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        assert "RAY_AUTH_MODE=disabled" not in page.read_text(), page  # authentication off is not the documented path


@pytest.mark.slow
def test_local_cluster_block_runs(tmp_path, sst2_dir):
    """docs/cluster.md's "Test it locally first" block, run by bash as written, on a copy of this checkout and a fresh
    HOME, with GLUE_DIR exported. Substituted: the ports and temp dir (another Ray may be running here), a wait for
    the head (a script types faster than a user), `ray stop` (it stops every Ray of this user: the test stops its own
    head) and a short row limit (a spec-level `profiles: demo` override in the copy, 1 epoch, 1 repeat)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache",
                                                                  "lora_sweep_results", "analysis_out"))
    demo = {"data": {"train_limit": 48}, "train": {"epochs": 1}, "repeats": 1}
    builtin = yaml.safe_load((REPO / "tune_jobs" / "profiles.yaml").read_text())["demo"]["data"]["dataset"]
    assert builtin == "glue/sst2"  # the demo's own dataset runs, from the GLUE_DIR the block hands the job
    spec = checkout / "tune_jobs" / "experiments" / "layers.yaml"
    spec.write_text(spec.read_text() + "\n" + yaml.safe_dump({"profiles": {"demo": demo}}))

    block = local_cluster_block()
    lines = block.rstrip("\n").splitlines()
    assert lines[-1].split("#")[0].strip() == "ray stop"
    body = "\n".join(lines[:-1]) + "\n"
    ports = head_ports()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    dash, agent = ports["dashboard-port"], ports["dashboard-agent-listen-port"]
    start = next(line for line in lines if line.startswith("ray start --head"))
    assert not start.rstrip().endswith("\\")
    own = " ".join(f"--{k}={v}" for k, v in ports.items()) + f" --temp-dir={temp_dir}"
    body = body.replace(start, start.replace("ray start --head", f"ray start --head {own}", 1) + "\n_wait_for_head")
    assert body.count("127.0.0.1:8265") >= 3
    body = body.replace("127.0.0.1:8265", f"127.0.0.1:{dash}")
    prelude = f"""set -euo pipefail
_wait_for_head() {{
  for _ in $(seq 180); do
    if ray job list --address http://127.0.0.1:{dash} >/dev/null 2>&1 && python3 -c "import socket, \\
        ray._private.services as s; socket.create_connection((s.get_node_ip_address(), {agent}), 2)" 2>/dev/null
    then return 0; fi
    sleep 1
  done
  echo "the head did not come up" >&2; return 1
}}
set -x
"""
    script = tmp_path / "readme_block.sh"
    script.write_text(prelude + body)
    env = fresh_machine_env(tmp_path)
    env["GLUE_DIR"] = os.environ.get("GLUE_DIR") or str(sst2_dir.parent)  # CI exports it (absolute)
    log = tmp_path / "readme_block.log"
    with open(log, "w") as out:
        bash = subprocess.Popen(["bash", str(script)], cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = bash.wait(timeout=1200)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            stop_own_head(bash, temp_dir)  # instead of the block's `ray stop`
    text = log.read_text()
    assert rc == 0, text[-6000:]
    assert "lora-sweep: 4 trials (4 TERMINATED)" in text and re.search(r"Job 'layers-demo-[\d-]+' succeeded", text), \
        text[-6000:]
    assert (Path(env["HOME"]) / ".ray" / "auth_token").is_file()
    trials = pq.read_table(checkout / "analysis_out" / "trials.parquet").to_pandas()
    assert len(trials) == 4 and (trials["status"] == "TERMINATED").all()
    assert set(trials["scenario"]) == {"upper", "lower", "even", "all"}


@pytest.fixture()
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def _analyze(exp: Path, out: Path):
    from analysis.aggregate import aggregate

    trials, epochs, _ = aggregate([str(exp)], out)
    return trials.to_pandas(), epochs.to_pandas()


@pytest.mark.slow
def test_multi_node_sweep_uses_both_nodes(tmp_path, tiny_bert_dir, two_node_cluster):
    from tune_jobs.study.spec import load_study
    from tune_jobs.sweep.runner import run_sweep

    cluster, worker = two_node_cluster
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, repeats=2, data={"train_limit": 300}))
    results = run_sweep(study, storage=str(tmp_path / "store"), name="multi", address=cluster.address)
    assert results.num_errors == 0
    trials, _ = _analyze(tmp_path / "store" / "multi", tmp_path / "pq")
    assert len(trials) == 4 and trials["node_id"].nunique() == 2
    assert worker.node_id in set(trials["node_id"])


@pytest.mark.slow
def test_node_loss_resumes_trial_from_its_checkpoint(tmp_path, tiny_bert_dir, two_node_cluster):
    from tune_jobs.study.spec import load_study
    from tune_jobs.sweep.runner import run_sweep

    cluster, worker = two_node_cluster
    epochs = 5
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, data={"train_limit": 400},
                                 train={"epochs": epochs}, max_failures=2))
    exp = tmp_path / "store" / "loss"
    removed = {}

    def remove_worker_mid_trial():
        deadline = time.time() + 300
        while time.time() < deadline and not removed:
            for result in exp.glob("*/result.json"):
                rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
                if rows and rows[-1].get("node_id") == worker.node_id and 2 <= rows[-1]["epoch"] < epochs:
                    removed["trial"], removed["epoch"] = result.parent.name, rows[-1]["epoch"]
                    cluster.remove_node(worker)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=remove_worker_mid_trial, daemon=True)
    killer.start()
    results = run_sweep(study, storage=str(tmp_path / "store"), name="loss", address=cluster.address)
    killer.join(timeout=5)
    assert removed, "no trial ran on the worker node long enough to remove it"
    assert results.num_errors == 0
    raw = [json.loads(line)["epoch"] for line in (exp / removed["trial"] / "result.json").read_text().splitlines()]
    assert raw == list(range(1, epochs + 1))  # continued after its checkpoint: no epoch repeated, none missing
    trials, epoch_rows = _analyze(exp, tmp_path / "pq")
    assert sorted(trials["trial_name"]) == ["upper-r4-rep0", "vup-r4-rep0"] and (trials["status"] == "TERMINATED").all()
    moved = trials.set_index("trial_name").loc[removed["trial"]]
    assert moved["num_restarts"] >= 1 and moved["node_id"] != worker.node_id
    for trial_id, g in epoch_rows.groupby("trial_id"):
        assert g["epoch"].tolist() == list(range(1, epochs + 1))


def test_worker_profile_script_grants_reading_the_named_data_prefix(tmp_path):
    """The script's policy, as it hands it to the AWS CLI (a stand-in `aws` on PATH records the call)."""
    import json
    import subprocess

    fake = tmp_path / "bin" / "aws"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" >> "$AWS_CALLS"\n')
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", AWS_CALLS=str(calls),
               LORA_SWEEP_BUCKET="results-bkt", LORA_SWEEP_DATA="s3://data-bkt/glue/")
    out = subprocess.run(["bash", str(REPO / "cluster" / "create-worker-profile.sh")], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    args = calls.read_text().split("\0")
    doc = json.loads(args[args.index("lora-sweep-results") + 2])
    by_sid = {st["Sid"]: st for st in doc["Statement"]}
    assert by_sid["ReadData"]["Resource"] == "arn:aws:s3:::data-bkt/glue/*"
    assert by_sid["ListData"]["Resource"] == "arn:aws:s3:::data-bkt"
    assert by_sid["ListData"]["Condition"]["StringLike"]["s3:prefix"] == ["glue", "glue/*"]
    assert by_sid["ReadWriteResults"]["Resource"] == "arn:aws:s3:::results-bkt/*"
    assert "read s3://data-bkt/glue" in out.stdout
    env["LORA_SWEEP_DATA"] = "s3://data-bkt"
    bad = subprocess.run(["bash", str(REPO / "cluster" / "create-worker-profile.sh")], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "must name a prefix" in bad.stderr


@pytest.mark.slow
def test_repeated_node_loss_loses_nothing_and_reruns_nothing(monkeypatch):
    """bench/chaos.py, shorter: 8 trials of data on a local S3 endpoint, results there too, 3 worker removals."""
    sys.path.insert(0, str(REPO / "bench"))
    import chaos

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED",
                "AWS_ENDPOINT_URL", "LORA_SWEEP_CACHE", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, "")  # chaos.main sets them: restored after the test
    assert chaos.main(["--trials", "8", "--epochs", "4", "--kills", "3", "--interval", "6", "--no-baseline"]) == 0
