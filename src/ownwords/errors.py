"""The error the CLI reports in one line: bad input from the user. Anything else is a bug and keeps
its traceback (`ownwords --debug ...` shows the traceback of user errors too)."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(ValueError):
    """An input (a file, an option, a model, a store) that cannot be used as given. The message
    names the input and what was expected."""


class MissingInput(UserError, FileNotFoundError):
    """A named input (file, folder, model, store) does not exist."""


def check_fields(config, checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise a UserError for the first `(ok, field, expected)` that is not ok, naming the field, its
    value and what is allowed."""
    for ok, name, expected in checks:
        if not ok:
            raise UserError(f"{name} is {getattr(config, name)!r}; expected {expected}")
