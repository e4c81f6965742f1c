"""One exception hierarchy for everything labtool reports to a user.

The CLI catches ``LabtoolError``, prints ``labtool: <message>`` on one line and exits with
``exit_code``, the way the docker CLI does:

    125  labtool itself failed (bad flag, unknown image, ...)
    126  the container's command exists but cannot be invoked
    127  the container's command was not found
    any other code is the container's own (137 = 128 + SIGKILL)
"""


class LabtoolError(Exception):
    """An error a user can act on. The message says what went wrong and what to do."""

    exit_code = 125


class UsageError(LabtoolError):
    """A bad flag, a bad value, or a combination that cannot work."""


class ImageNotFound(LabtoolError):
    """The image is not in the local store (and cannot be made or pulled)."""

    def __init__(self, ref):
        super().__init__(f"Unable to find image '{ref}' locally")


class ContainerNotFound(LabtoolError):
    def __init__(self, name):
        super().__init__(f"No such container: {name}")


class CommandNotFound(LabtoolError):
    exit_code = 127


class CommandNotExecutable(LabtoolError):
    exit_code = 126


class NeedsRoot(LabtoolError):
    def __init__(self, what="this command"):
        super().__init__(f"{what} needs root: namespaces, mounts and cgroups are root's tools "
                         "(try: sudo labtool ...)")
