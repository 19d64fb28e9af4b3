"""Errors shared by every layer (common/, bench/, weights_tools/, tools/).

``UserError``: something the user can fix (a file, key, value or missing package).  ``tools/main.py`` prints it
as one line without a traceback and exits with code 2.  It lives here, not in ``tools/``, so that ``bench/`` and
anything else below the entry point can raise it without importing ``tools``.
"""
from __future__ import annotations


class UserError(RuntimeError):
    """Something the user can fix (file, key, value, missing package); printed without a traceback."""


def one_line(message) -> str:
    """``message`` (any object's text) as one line, the way user errors are printed: its lines joined by '; ' (by
    a space after a line ending in ':'), runs of blanks collapsed."""
    out = ""
    for line in (" ".join(part.split()) for part in str(message).splitlines()):
        if line:
            out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out


__all__ = ["UserError", "one_line"]
