"""The one exception type for bad user input: a field, the bad value and what is allowed."""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input in an experiment spec, a placement or a CLI argument.

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
        return (_rebuild_spec_error, (self.field, self.problem, self.got, self.allowed))


def _rebuild_spec_error(field: str, problem: str, got: object, allowed: str | None) -> SpecError:
    return SpecError(field, problem, got=got, allowed=allowed)


class SpecErrors(ValueError):
    """Several SpecErrors found in one pass, so a user fixes a spec in one round."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
