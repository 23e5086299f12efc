"""The one input-error type of the project: every package raises it, every command prints it as one line and
exits 2 (EXIT_INPUT)."""

from __future__ import annotations

EXIT_INPUT = 2


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
