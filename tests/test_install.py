"""The install a new user runs is the one CI runs, within ranges that stop at untested major versions, pinned to
the tested set by constraints.txt (which must satisfy those ranges)."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

KEY_PACKAGES = ("transformers", "peft", "ray", "datasets", "pyarrow", "scipy", "pytest")


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [Requirement(r) for r in reqs]


def test_readme_install_is_the_ci_install():
    readme = (REPO / "README.md").read_text()
    install = re.search(r"```bash\n(python3 -c 'import torch'[^\n]*)\n```", readme).group(1)
    assert "-c constraints.txt" in install
    assert install in (REPO / ".ci" / "run").read_text().splitlines()


def test_every_dependency_has_an_upper_bound():
    for req in _requirements():
        ops = {s.operator for s in req.specifier}
        assert ops & {"<", "<=", "=="}, f"pyproject.toml: {req} has no upper bound at an untested major version"


def test_constraints_pin_the_key_packages_inside_the_declared_ranges():
    pins = _pins()
    assert "torch" not in pins  # users install the torch build their machine needs first
    assert set(map(canonicalize_name, KEY_PACKAGES)) <= set(pins)
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt: {name} {pins[name]} is " \
                f"outside pyproject.toml's {req}"
