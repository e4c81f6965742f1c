"""``labtool run --explain``: narrate every kernel-level action as it happens.

Each step calls ``say(step, action, why)`` just before it acts, for example::

    [namespaces] unshare(CLONE_NEWNS|CLONE_NEWUTS)   new mount table and hostname for the child
    [chroot]     pivot_root(".", ".")                 the rootfs becomes "/" of this mount namespace

The lines go to stderr, so the container's own output on stdout stays clean.
"""

import contextlib
import os
import sys

enabled = False


def say(step, action, why=""):
    """Print one narrated action (only with --explain)."""
    if enabled:
        line = f"[{step}] {action}"
        if why:
            line = f"{line:<58} {why}"
        os.write(sys.stderr.fileno(), (line + "\n").encode())


def flag_names(flags, names):
    """Spell a bit mask as ``A|B|C`` using ``names`` (a dict name -> bit)."""
    return "|".join(name for name, bit in names.items() if flags & bit) or "0"


@contextlib.contextmanager
def quiet():
    """No narration inside this block (a helper's own lines would repeat the caller's)."""
    global enabled
    was, enabled = enabled, False
    try:
        yield
    finally:
        enabled = was
