"""Two small process helpers shared by the runtime, ``namespaces`` and ``init``."""

import os
import signal

PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def exit_code(status):
    """A wait status as a shell reports it: the exit code, or 128 + the killing signal."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


# ``labtool build`` sets this during a RUN step: Ctrl-C (SIGINT) or SIGTERM then ends the step's
# container with SIGKILL, as Docker cancels a build. Passed on as they are, they would do nothing
# to a PID 1 without a handler for them (man 7 pid_namespaces), and the build would go on.
cancel_on_interrupt = False
interrupted = []                  # the signals that cancelled (build reads it after the step)


def parse_signal(text):
    """A signal as Docker spells it (``KILL``, ``SIGTERM``, ``sigint``, ``15``), or None when
    it names none: for ``labtool kill -s``, ``STOPSIGNAL`` and ``labtool stop``."""
    name = str(text).strip().upper()
    try:
        if name.isdigit():
            return signal.Signals(int(name))
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        return None


def forward_signals(pid, signals=PASSED_ON):
    """From now on, pass these signals on to ``pid`` instead of dying of them."""
    def forward(signum, _frame):
        if cancel_on_interrupt and signum in (signal.SIGINT, signal.SIGTERM):
            interrupted.append(signum)
            signum = signal.SIGKILL
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in signals:
        signal.signal(sig, forward)


def read_all(fd):
    """Everything that comes on a pipe until its writers are gone; then close it."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return data
