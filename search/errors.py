"""The one error type that means "the user's input is wrong" (exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from objectives.base import DataError


class InputError(ValueError):
    """Bad input: a space file, a dataset, a study name, a storage URL, a port, an address or
    a command-line option.

    The message is one line naming the file (or option) and the field, so the launcher can
    print it as is. Objectives raise ``objectives.base.DataError``, which ``from_data`` turns
    into this.
    """

    def __init__(self, source: str | Path, field: str, problem: str) -> None:
        self.source, self.field, self.problem = str(source), field, problem
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple:  # raised in another process too (search/preparation.py)
        return type(self), (self.source, self.field, self.problem)


def from_data(error: DataError, source: str | Path) -> InputError:
    """An objective's DataError as input error; ``source`` is used when it names no file."""
    return InputError(error.source or source, error.field, error.problem)


def closest(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean ...?)' suffix naming the closest candidate, or ''."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc if part != "__root__")


def from_validation_error(
    source: str | Path, error: ValidationError, prefix: str = "", fields_at=None
) -> InputError:
    """Turn pydantic's first error into a InputError, suggesting a key for unknown ones.

    ``fields_at(loc)`` returns the valid keys of the model found at ``loc``.
    """
    first = error.errors()[0]
    raw_loc = tuple(first["loc"])
    # Tagged unions put the tag in the location (search.x.float.low); users never wrote it.
    loc = tuple(part for part in raw_loc if part not in {"float", "int", "categorical"})
    field = dotted((prefix, *loc) if prefix else loc)
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if first["type"] == "extra_forbidden":
        hint = closest(str(loc[-1]), fields_at(raw_loc[:-1])) if fields_at else ""
        return InputError(source, field, f"unknown key{hint}{tail}")
    message = first["msg"].removeprefix("Value error, ")
    return InputError(source, field, f"{message}{tail}")
