"""Two small process helpers shared by the runtime, ``namespaces`` and ``init``."""

import os
import signal

PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def exit_code(status):
    """A wait status as a shell reports it: the exit code, or 128 + the killing signal."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def forward_signals(pid, signals=PASSED_ON):
    """From now on, pass these signals on to ``pid`` instead of dying of them."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in signals:
        signal.signal(sig, forward)
