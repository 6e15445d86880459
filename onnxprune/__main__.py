"""``onnxprune`` and ``python -m onnxprune``: the signal handlers go in before the heavy
imports, so an interrupt at any time is one line and exit code 128 + its number."""

from __future__ import annotations

import signal
import sys


def entry() -> None:
    from . import interrupts

    with interrupts.guarded(keep=True):
        try:
            from .cli.main import main
        except BaseException as err:  # an interrupt inside an extension's init is an ImportError
            signum = interrupts.pending() or getattr(err, "signum", None)
            if signum is None:
                raise
            print(f"onnxprune: interrupted ({signal.Signals(signum).name}) while starting; "
                  "nothing was written", file=sys.stderr)
            sys.exit(128 + signum)
    code = main(keep_handlers=True)
    for s in (signal.SIGINT, signal.SIGTERM):  # the outcome is decided: shutdown is not
        signal.signal(s, signal.SIG_IGN)       # interruptible (SIG_IGN survives finalization)
    sys.exit(code)


if __name__ == "__main__":
    entry()
