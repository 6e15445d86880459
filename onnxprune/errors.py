"""User-facing errors: one clear line and a documented exit code."""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator

# Exit codes (documented in the README).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT_MISSING = 3
EXIT_INVALID_MODEL = 4
EXIT_UNSUPPORTED = 5
EXIT_VERIFY_FAILED = 6
EXIT_OUTPUT = 7
EXIT_CONSTRAINT = 8
EXIT_HOST_UNREACHABLE = 10  # --target-host / bench --host: cannot connect
EXIT_HOST_AUTH = 11  # the device refuses the login (or its host key)
EXIT_HOST_RUNTIME = 12  # no Python with numpy and onnxruntime there
EXIT_HOST_TIMEOUT = 13  # a command there ran past its time


class OnnxPruneError(Exception):
    """An error a user can act on. ``str(err)`` is the one line shown."""

    exit_code = EXIT_INTERNAL


class UsageError(OnnxPruneError):
    exit_code = EXIT_USAGE


class InputMissingError(OnnxPruneError):
    exit_code = EXIT_INPUT_MISSING


class InvalidModelError(OnnxPruneError):
    exit_code = EXIT_INVALID_MODEL


class UnsupportedModelError(OnnxPruneError):
    exit_code = EXIT_UNSUPPORTED


class VerificationError(OnnxPruneError):
    exit_code = EXIT_VERIFY_FAILED


class OutputError(OnnxPruneError):
    exit_code = EXIT_OUTPUT


class ConstraintError(OnnxPruneError):
    """A requested bound cannot be met (not even by the unpruned model)."""

    exit_code = EXIT_CONSTRAINT


class HostUnreachableError(OnnxPruneError):
    exit_code = EXIT_HOST_UNREACHABLE


class HostAuthError(OnnxPruneError):
    exit_code = EXIT_HOST_AUTH


class HostRuntimeError(OnnxPruneError):
    exit_code = EXIT_HOST_RUNTIME


class HostTimeoutError(OnnxPruneError):
    exit_code = EXIT_HOST_TIMEOUT


class OnnxPruneWarning(UserWarning):
    """Something the user asked for was adjusted or had no effect; the run goes on."""


# The lists warnings are collected into while a run is under way (a report lists them).
_SINKS: contextvars.ContextVar[tuple[list[str], ...]] = contextvars.ContextVar(
    "onnxprune_warnings", default=())


def warn(message: str) -> None:
    """Say it once: front ends print these as one line each (Python's warnings otherwise)."""
    for sink in _SINKS.get():
        if message not in sink:
            sink.append(message)
    warnings.warn(message, OnnxPruneWarning, stacklevel=2)


@contextlib.contextmanager
def collect_warnings(into: list[str]) -> Iterator[list[str]]:
    """Every onnxprune warning said inside the block is also appended to ``into`` (once),
    whatever Python's warning filters show."""
    token = _SINKS.set((*_SINKS.get(), into))
    try:
        yield into
    finally:
        _SINKS.reset(token)


def first_line(err: BaseException) -> str:
    """An exception's message, its first line (its type's name when it has none): what an
    error line quotes of a library's failure."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
