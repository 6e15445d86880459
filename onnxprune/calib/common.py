"""What every reader shares: importing an optional package with one line naming the extra."""

from __future__ import annotations

import importlib

from ..errors import UsageError


def need(module: str, package: str, what: str):
    """``module`` imported, or a usage error naming the ``data`` extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"reading {what} needs {package}: pip install 'onnxprune[data]'") \
            from None
