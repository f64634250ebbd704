"""Validation errors that name the field path and the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its path in the input (``line_items[1].sku``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidInputError(ValueError):
    """Raised when a payload cannot become a canonical object.

    ``errors`` lists every invalid field, so an operator can fix them all at once.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(error) for error in self.errors))

    @classmethod
    def single(cls, path: str, reason: str) -> InvalidInputError:
        return cls([FieldError(path, reason)])

    @classmethod
    def from_validation_error(cls, exc: ValidationError, prefix: str = "") -> InvalidInputError:
        """Convert pydantic's errors, prefixing each path with ``prefix``."""
        errors = []
        for error in exc.errors(include_url=False):
            path = format_path((prefix, *error["loc"]) if prefix else error["loc"])
            errors.append(FieldError(path, _reason(error)))
        return cls(errors)


def format_path(location: Sequence[int | str]) -> str:
    """Render a location tuple as ``a.b[2].c``."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part:
            path += f".{part}" if path else str(part)
    return path


def _reason(error: object) -> str:
    details = error if isinstance(error, dict) else {}
    message = str(details.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if details.get("type") == "missing":
        return "missing"
    if "input" in details:
        value = details["input"]
        shown = repr(value)
        scalar = isinstance(value, str | int | float) or value is None
        # A message may already quote the text it rejects.
        already_quoted = isinstance(value, str) and shown in message
        if scalar and not already_quoted:
            return f"{message} (got {shown})"
    return message
