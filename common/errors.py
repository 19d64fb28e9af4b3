"""Errors shared by every layer (common/, bench/, weights_tools/, tools/).

``UserError``: something the user can fix (a file, key, value or missing package).  ``tools/main.py`` prints it
as one line without a traceback and exits with code 2.  It lives here, not in ``tools/``, so that ``bench/`` and
anything else below the entry point can raise it without importing ``tools``.
"""
from __future__ import annotations


class UserError(RuntimeError):
    """Something the user can fix (file, key, value, missing package); printed without a traceback."""


__all__ = ["UserError"]
