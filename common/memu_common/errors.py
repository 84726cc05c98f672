"""The one way Memu OS code fails for a person: a message that says what is wrong, and a hint
that says what to do about it."""

from __future__ import annotations


class MemuError(Exception):
    """An error meant for a person to read.

    Args:
        message: what went wrong, in one sentence.
        hint: what to do about it (optional), in one sentence.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message
