"""User-facing errors: one clear message, no traceback, non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """An error the user can cause and fix; printed as one message, never a traceback."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint
