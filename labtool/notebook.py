"""Helpers for the notebooks: run kernel-level work in a fresh process, show its output.

A Jupyter kernel is multi-threaded and runs an event loop, so it must never unshare,
setns or fork a container itself. Every demo cell goes through one of these instead:

    sh("labtool run --rm busybox hostname")    a shell command, output shown in the cell
    labtool("run", "--rm", "busybox", "ps")    the labtool CLI of this very checkout
    python('import os; print(os.getpid())')    a snippet in a fresh Python interpreter
    reg = local_registry()                      a real registry on 127.0.0.1 (reg.host, reg.stop())

Each returns a ``Result`` (``.out``, ``.err``, ``.code``) so a check cell can assert on it.
"""

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

# The checkout this package lives in; its ``labtool`` is the one the notebooks run.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Result:
    out: str
    err: str
    code: int

    def __repr__(self):  # a bare ``Result`` at the end of a cell shows nothing extra
        return f"<exit code {self.code}>"


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # ``labtool`` in a shell command means this checkout's labtool, run by this Python
    bindir = os.path.join(REPO, "labtool", "_bin")
    env["PATH"] = bindir + os.pathsep + os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _show(result, quiet):
    if not quiet:
        if result.out:
            print(result.out, end="" if result.out.endswith("\n") else "\n")
        if result.err:
            print(result.err, end="" if result.err.endswith("\n") else "\n", file=sys.stderr)
    return result


def sh(command, quiet=False, timeout=60, input=None):
    """Run a shell command (bash) in a fresh process; print and return its output."""
    p = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=_env(),
                       timeout=timeout, input=input, cwd=os.getcwd())
    return _show(Result(p.stdout, p.stderr, p.returncode), quiet)


def labtool(*args, quiet=False, timeout=60):
    """Run ``labtool ARGS...`` (this checkout's) in a fresh process."""
    if len(args) == 1 and " " in args[0]:
        args = shlex.split(args[0])
    p = subprocess.run([sys.executable, "-m", "labtool", *args], capture_output=True, text=True,
                       env=_env(), timeout=timeout)
    return _show(Result(p.stdout, p.stderr, p.returncode), quiet)


def python(code, quiet=False, timeout=60):
    """Run a Python snippet in a fresh interpreter (single-threaded: safe for unshare)."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       timeout=timeout)
    return _show(Result(p.stdout, p.stderr, p.returncode), quiet)


def local_registry(storage=None):
    """Start a real registry (Docker Distribution, ``docker-registry serve``) on 127.0.0.1 at
    a free port, storing into ``storage`` (default: a temporary directory); return it.

    ``reg.host`` is ``127.0.0.1:PORT`` (push to ``f"{reg.host}/busybox"``), ``reg.stop()``
    stops it and removes its files (also done when the kernel exits, should a notebook stop
    half-way). The registry is a separate program, not a thread of this kernel.
    """
    import atexit

    from labtool.images.localregistry import LocalRegistry

    reg = LocalRegistry(storage=storage).start()
    atexit.register(reg.stop)
    return reg
