"""How a run that did not finish is told: an interrupt (and what was written before it), or
an error as one line with the exit code of its kind (a traceback with ``--debug``)."""

from __future__ import annotations

import argparse
import signal
import traceback

from rich.console import Console

from .. import interrupts
from ..errors import EXIT_INTERNAL, EXIT_OK, OnnxPruneError
from ..ir import io
from ..options import OptionError
from .flags import flag_message

CURRENT: dict[str, str | None] = {"pass": None}  # the running pass, for interrupts


def interrupted(err: Console, e: BaseException) -> int:
    """An interrupt leaves nothing behind and exits 128 + the signal, or, once the write that
    completes the output has landed (the model verified and renamed into place), says what
    was written and exits 0: never a failure code with a file in place."""
    where = f" during pass {CURRENT['pass']}" if CURRENT["pass"] else ""
    signum = interrupts.pending() or getattr(e, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    if io.written:
        err.print(f"onnxprune: interrupted ({name}){where}, after writing "
                  f"{', '.join(map(str, io.written))} (complete and verified); the rest of the "
                  "run was skipped", markup=False, highlight=False, soft_wrap=True)
        return EXIT_OK
    err.print(f"onnxprune: interrupted ({name}){where}; nothing was written", markup=False,
              highlight=False, soft_wrap=True)
    return 128 + signum


def failed(err: Console, e: Exception, args: argparse.Namespace) -> int:
    """One line for the user (a traceback with --debug); the exit code of the error's kind."""
    if args.debug:
        traceback.print_exc()
    if isinstance(e, OnnxPruneError):
        text = flag_message(e, args) if isinstance(e, OptionError) else str(e)
        err.print(f"onnxprune: error: {text}", markup=False, highlight=False, soft_wrap=True)
        return e.exit_code
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    where = f" in pass {CURRENT['pass']}" if CURRENT["pass"] else ""
    err.print(f"onnxprune: internal error{where}: {type(e).__name__}: {first} (rerun with "
              "--debug)", markup=False, highlight=False, soft_wrap=True)
    return EXIT_INTERNAL
