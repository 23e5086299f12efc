"""The one input-error type of the project, the exit codes of every command, and the one way a command runs
(`run_guarded`): every package raises InputError, every command prints it as one line and exits 2 (EXIT_INPUT)."""

from __future__ import annotations

import sys
from collections.abc import Callable

# The exit codes of every command (`lora-sweep SUBCOMMAND`, `python -m analysis.report`, ...)
EXIT_OK = 0
EXIT_TRIALS_FAILED = 1  # it ran, but a trial did not end well: `run` with errored trials (a diverged one is a
#                         result there, exit 0), `trial` whose loss turned NaN/inf
EXIT_INPUT = 2  # bad input (InputError): a spec field, a data file, a flag, an experiment folder; or a folder or
#                 bucket that cannot be read or written (OSError)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


class InputError(ValueError):
    """Bad input (a spec field, a data file, a CLI flag, an experiment folder).

    `str(err)` is one line: ``<field>: <problem> (got <value>); <what is allowed>``.
    """

    def __init__(self, field: str, problem: str, *, got: object = None, allowed: str | None = None):
        self.field = field
        self.problem = problem
        self.got = got
        self.allowed = allowed
        text = f"{field}: {problem}"
        if got is not None:
            text += f" (got {got!r})"
        if allowed:
            text += f"; {allowed}"
        super().__init__(text)

    def __reduce__(self):
        # Ray copies and pickles exceptions raised in trials; keyword-only fields need explicit rebuilding.
        return (_rebuild, (self.field, self.problem, self.got, self.allowed))


def _rebuild(field: str, problem: str, got: object, allowed: str | None) -> InputError:
    return InputError(field, problem, got=got, allowed=allowed)


class InputErrors(ValueError):
    """Several InputErrors found in one pass, so a user fixes a spec in one round."""

    def __init__(self, errors: list[InputError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def did_you_mean(value: object, options) -> str:
    """`did you mean 'x'? ` for the closest of `options` to a mistyped `value` (typos are the usual cause), or ''."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def one_of(value: object, options) -> str:
    """`did you mean 'x'? one of a, b, c`: the `allowed` text of a closed set of names."""
    options = [str(o) for o in options]
    return did_you_mean(value, options) + "one of " + ", ".join(options)


def check_positive(value: float | None, field: str, example: str) -> None:
    """A number flag: not given (None), or finite and > 0 (NaN and inf are refused alike)."""
    import math

    if value is not None and not 0 < value < math.inf:
        raise InputError(field, "must be a finite number > 0", got=value, allowed=example)


def check_output_dir(path: object, field: str = "--out", remote: bool = False) -> None:
    """A folder a command will create or write into: refuse one that is a file, or lies under a file, before
    anything is read or written (else a NotADirectoryError traceback half-way through). A URI passes where the
    command writes to one (`remote`), else it is refused: it would become a local folder named `s3:`."""
    import os

    text = os.fspath(path)
    if "://" in text:
        if not remote:
            raise InputError(field, "must be a local folder", got=text,
                             allowed="a path on this machine (copy the folder to the bucket afterwards)")
        return
    here = os.path.abspath(os.path.expanduser(text))
    while not os.path.exists(here):
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent
    if not os.path.isdir(here):
        where = "is a file" if here == os.path.abspath(os.path.expanduser(text)) else f"lies under the file {here}"
        raise InputError(field, f"{where}, not a directory", got=text,
                         allowed="a new or existing directory (remove or rename the file, or choose another path)")


def run_guarded(func: Callable, args) -> int:
    """Run a command: `func(args)`'s exit code (None: EXIT_OK). Bad input (InputError, InputErrors) and a folder or
    bucket that cannot be read or written (OSError) become one `error:` line per problem and EXIT_INPUT (`--debug`
    on `args`: the traceback instead); Ctrl-C one line and EXIT_INTERRUPTED."""
    try:
        return int(func(args) or EXIT_OK)
    except (InputError, InputErrors, OSError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"error: {err}".replace("\n", "\nerror: "), file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
