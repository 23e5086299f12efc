"""The documentation stays honest: a short README, relative links that resolve (to a heading, for `#anchor` links),
and command blocks that are valid bash whose `lora-sweep` commands parse with the real CLI, naming specs and
profiles that exist. Fast: no network, no training. (The local-cluster block of docs/cluster.md is run by
tests/test_cluster.py.)"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 220


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def split_page(page: Path) -> tuple[list[Block], str]:
    """The fenced blocks of a page, and its prose (every block's lines blanked, so line numbers stay)."""
    blocks, prose, fence, body = [], [], None, []
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if fence is None and line.startswith("```"):
            fence, lang, body = n, line[3:].strip().lower(), []
            prose.append("")
        elif fence is not None and line.startswith("```"):
            blocks.append(Block(page, fence, lang, "\n".join(body) + "\n"))
            fence = None
            prose.append("")
        elif fence is not None:
            body.append(line)
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, f"{page.relative_to(REPO)}:{fence}: a fenced block is never closed"
    return blocks, "\n".join(prose)


BLOCKS = [b for p in PAGES for b in split_page(p)[0]]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (word characters, '-' and spaces stay),
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in split_page(page)[1].splitlines():
        m = re.match(r"#{1,6} +(.*?) *#* *$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"\[[^\]\n]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(page: Path) -> list[str]:
    prose = re.sub(r"`[^`]*`", "", split_page(page)[1])  # code spans (they may wrap lines) are not links
    return [t for t in LINK.findall(prose) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"


def test_readme_keeps_the_two_set_up_commands():
    bash = [b.text for b in BLOCKS if b.page == README and b.lang == "bash"]
    assert any(re.search(r"^python3 -c 'import torch'.*-c constraints\.txt$", b, re.M) for b in bash)
    assert any(re.search(r"^HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python3 -m pytest -q$", b, re.M) for b in bash)
    assert "python3 -m pytest -q" in (REPO / ".ci" / "run").read_text()


def test_the_docs_are_linked_from_the_readme():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in relative_links(README)}
    missing = [p.relative_to(REPO).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"README.md links none of {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif REPO.resolve() not in dest.parents and dest != REPO.resolve():
            broken.append(f"{target}: outside the repository")
        elif anchor and dest.suffix != ".md":
            broken.append(f"{target}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.relative_to(REPO)} has no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


BASH = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell")]


@pytest.mark.parametrize("block", BASH, ids=str)
def test_bash_blocks_are_valid_bash(block):
    res = subprocess.run(["bash", "-n"], input=block.text, text=True, capture_output=True)
    assert res.returncode == 0, f"{block}: {res.stderr}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=str)
def test_python_blocks_compile(block):
    compile(block.text, str(block), "exec")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in ("yaml", "yml")], ids=str)
def test_yaml_blocks_load(block):
    assert yaml.safe_load(block.text) is not None, block


SEPARATORS = re.compile(r"^[;&|()]+$")


def shell_commands(text: str) -> list[list[str]]:
    """Simple commands of a bash block, as words: continuation lines joined, comments dropped, split at ; && || |
    and parentheses; leading VAR=value assignments and `export` dropped."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words, command = list(lex), []
        for w in [*words, ";"]:
            if SEPARATORS.match(w):
                while command and (command[0] == "export" or re.match(r"^\w+=", command[0])):
                    command.pop(0)
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(w)
    return commands


def lora_sweep_argv(words: list[str]) -> list[str] | None:
    """The `lora-sweep` arguments a command runs: `lora-sweep ...`, or `python -m tune_jobs.sweep ...` (= `run`),
    also after the `--` of `ray job submit`."""
    starts = [0, *(i + 1 for i, w in enumerate(words) if w == "--")]
    for i in starts:
        if words[i:i + 1] == ["lora-sweep"]:
            return words[i + 1:]
        if re.fullmatch(r"python3?", words[i] if i < len(words) else "") and words[i + 1:i + 3] == ["-m",
                                                                                               "tune_jobs.sweep"]:
            return ["run", *words[i + 3:]]
    return None


CLI_COMMANDS = [(b, argv) for b in BASH for words in shell_commands(b.text)
                if (argv := lora_sweep_argv(words)) is not None]


def spec_profiles(spec: Path) -> set[str]:
    from tune_jobs.study.profiles import builtin_profiles

    own = yaml.safe_load(spec.read_text()).get("profiles") or {}
    return set(builtin_profiles()) | set(own)


def test_the_docs_show_every_subcommand():
    from tune_jobs.cli import SUBCOMMANDS

    shown = {argv[0] for _, argv in CLI_COMMANDS if argv}
    assert set(SUBCOMMANDS) <= shown, f"no command block shows {sorted(set(SUBCOMMANDS) - shown)}"


@pytest.mark.parametrize("block, argv", CLI_COMMANDS, ids=[f"{b}:{' '.join(a[:2])}" for b, a in CLI_COMMANDS])
def test_lora_sweep_commands_parse(block, argv):
    from tune_jobs.cli import build_parser

    line = "lora-sweep " + shlex.join(argv)
    out, err = io.StringIO(), io.StringIO()
    try:  # argparse exits on a bad command line (OneLineParser prints one line first)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = build_parser(argv).parse_args(argv)
    except SystemExit as exit_:
        args, code = None, exit_.code
    if args is None:
        pytest.fail(f"{block}: `{line}` does not parse (exit {code}): {(err.getvalue() or out.getvalue()).strip()}",
                    pytrace=False)
    spec = getattr(args, "spec", None)
    if spec is not None:
        assert (REPO / spec).is_file(), f"{block}: `{line}` names a spec that does not exist: {spec}"
        if args.profile:
            assert args.profile in spec_profiles(REPO / spec), \
                f"{block}: `{line}`: {spec} has no profile {args.profile!r} (built-in or under its `profiles:`)"


@pytest.mark.parametrize("block", BASH, ids=str)
def test_repository_files_named_in_bash_blocks_exist(block):
    named = {w for words in shell_commands(block.text) for w in words
             if re.search(r"\.(yaml|yml|py|sh|toml|txt)$", w) and not re.match(r"(/|~|[a-z0-9+.-]+://)", w)
             and "$" not in w}
    missing = sorted(w for w in named if not (REPO / w).exists())
    assert not missing, f"{block}: names {missing}, not in the repository"
