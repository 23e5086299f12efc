"""The rooms keep their doors: no import cycles, lora_ext knows no Ray, analysis imports no training code, training
imports no analysis but the searcher's stopping rule (analysis.sequential, the report's own test) and export's group
labels (analysis.groups), and the trial record (record/: fields, metrics, Ray's files, the input error) imports
nothing of the project and nothing but the standard library and pyarrow. Checked on the source, lazy imports
included."""

from __future__ import annotations

import ast
import sys

from tests.conftest import REPO

PACKAGES = ("lora_ext", "tune_jobs", "analysis", "record")


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> every module (project or not) it imports anywhere in its source."""
    graph = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            name = module_name(path)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            targets = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                    mod = f"{base}.{node.module}" if base and node.module else (node.module or base)
                    targets |= {mod} | {f"{mod}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    targets |= {a.name for a in node.names}
            graph[name] = targets
    return graph


def test_no_import_cycles_between_project_modules():
    graph = import_graph()
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    assert [m for m in edges if reaches(m, m, {m})] == []


def test_each_room_keeps_its_door():
    graph = import_graph()
    rooms = {m: {t.split(".")[0] for t in ts} for m, ts in graph.items()}
    for module, imported in rooms.items():
        if module.startswith("lora_ext"):
            assert "ray" not in imported and not imported & {"tune_jobs", "analysis"}, module
        assert "raylog" not in imported, module  # grown into record/
        if module.startswith("analysis"):
            assert not imported & {"tune_jobs", "lora_ext", "torch", "transformers", "peft", "ray"}, module
        if module.startswith("tune_jobs"):  # two doors: the searcher's stopping rule is the report's own test, and
            # export names groups as the report does (`--scenario 'all r=8'`, `--best` of the study)
            into = {t for t in graph[module] if t.split(".")[0] == "analysis"}
            doors = {"tune_jobs.sweep.searcher": "analysis.sequential", "tune_jobs.export": "analysis.groups"}
            assert all(t.startswith(doors.get(module, "-")) for t in into), (module, into)
        if module.startswith("record"):
            outside = {m for m in imported if m not in sys.stdlib_module_names and m not in ("pyarrow", "record")}
            assert not outside, (module, outside)  # neutral: training and analysis both import it


# tune_jobs' rooms from the ground up; the files directly in tune_jobs/ are the commands, on top of them all
ROOMS = ("remote", "study", "data", "train", "sweep")


def room_of(module: str) -> int | None:
    """A tune_jobs module's floor: its room's index, len(ROOMS) for a command; None outside tune_jobs."""
    parts = module.split(".")
    if parts[0] != "tune_jobs":
        return None
    if len(parts) > 1 and parts[1] in ROOMS and parts[-1] != "__main__":  # an entry point stands with the commands
        return ROOMS.index(parts[1])
    return len(ROOMS)


def test_tune_jobs_rooms_import_only_downward():
    graph = import_graph()
    assert {room_of(m) for m in graph if m.startswith("tune_jobs.")} == set(range(len(ROOMS) + 1))  # all in use
    upward = sorted((m, t) for m, targets in graph.items() if room_of(m) is not None
                    for t in targets if t in graph and room_of(t) is not None and room_of(t) > room_of(m))
    assert upward == []


def test_tune_jobs_has_no_flat_module_left_but_its_commands():
    commands = {"__init__", "__main__", "cli", "cli_args", "plan", "calibrate", "run", "trial", "export"}
    assert {p.stem for p in (REPO / "tune_jobs").glob("*.py")} == commands
