"""relrec's version, one string: the installed distribution's (pyproject `[project] version`).

The OpenAPI document (`service.app`) and every artifact's manifest (`relrec_version`, written
by `training.exporter` and `training.baseline_export`) read it here. Never restated in code.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

__all__ = ["UNKNOWN", "relrec_version"]

UNKNOWN = "0+unknown"  # a valid PEP 440 version: running from a tree that is not installed


@cache
def relrec_version() -> str:
    try:
        return metadata.version("relrec")
    except metadata.PackageNotFoundError:
        return UNKNOWN
