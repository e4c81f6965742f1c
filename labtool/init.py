"""``--init``: a tiny init to be PID 1, so the command does not have to be.

PID 1 of a PID namespace has two jobs the kernel gives no other process
(man 7 pid_namespaces):

1. Orphans are re-parented to it: it must wait() for them, or they stay zombies.
2. It gets no signal it has not asked for: SIGTERM or SIGINT sent to a PID 1 without a
   handler do nothing (only SIGKILL from the parent namespace always works). A shell or
   a server that never expected to be PID 1 then ignores ``labtool stop`` and Ctrl-C.

This init forks the command, passes every signal it gets on to it, reaps every child,
and exits with the command's exit code when the command ends (like tini or
``docker run --init``).
"""

import os
import signal

from labtool import process

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def run_as_init(start_command, then=None):
    """Be PID 1: ``start_command()`` runs (and execs) in a child; we reap and forward.

    ``then()``, if given, runs in PID 1 once the child is forked: the runtime passes the
    drop to the command's user and capabilities (step 06), so PID 1 holds no more than the
    command it serves (as Docker's tini runs with the container's user and capabilities).
    """
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        start_command()                      # never returns
    if then:
        then()                               # if it fails, the caller reports it: PID 1 exits,
                                             # and the kernel kills the rest of the PID namespace

    # Keep no file of the container's start open (the pipe on which a failed exec is
    # reported closes by itself when the command's exec succeeds: only if we hold no copy)
    os.closerange(3, 65536)
    process.forward_signals(child, FORWARDED)
    while True:
        try:
            pid, status = os.wait()          # reaps the command and any orphan
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(process.exit_code(status))
