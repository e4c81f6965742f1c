"""Image references, read the way Docker reads them: ``[HOST[:PORT]/]PATH[:TAG][@DIGEST]``.

    busybox                         no host: the default registry (if one is configured),
                                    repository ``library/busybox``, tag ``latest``
    127.0.0.1:5000/busybox:1.35     host 127.0.0.1:5000, repository ``busybox``, tag ``1.35``
    localhost/team/app@sha256:...   host localhost, repository ``team/app``, by digest

The first component is a registry host when it contains a dot or a colon, or is
``localhost`` (the rule of Docker's ``reference`` package); otherwise the whole name is a
repository on the default registry. Docker's own default registry keeps its "official"
images under ``library/``: a one-part name there means ``library/NAME``, and labtool
follows that rule for whatever default registry is configured (a mirror expects it too).

The default registry: ``LABTOOL_REGISTRY=HOST[:PORT]``, or ``"registry": "HOST[:PORT]"``
in labtool's config file (``/var/lib/labtool/config.json``). None is built in.
"""

import json
import os
import re
from dataclasses import dataclass

from labtool import paths
from labtool.errors import UsageError

# Lower-case path components separated by / ; a tag is up to 128 word characters, dots, dashes.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass
class Reference:
    host: str          # "127.0.0.1:5000", or "" when no registry is known
    repository: str    # "busybox", "library/busybox", "team/app"
    tag: str           # "latest" unless given (empty when pulled by digest only)
    digest: str = ""   # "sha256:..." when given
    local: str = ""    # the name in the local store: what the user typed, with its tag

    @property
    def name(self):
        """HOST/REPOSITORY, as Docker prints it in ``The push refers to repository [...]``."""
        return f"{self.host}/{self.repository}" if self.host else self.repository

    @property
    def name_and_tag(self):
        """``127.0.0.1:5000/busybox:latest``: the full name, registry and all."""
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def wanted(self):
        """The manifest to ask the registry for: the digest if given, else the tag."""
        return self.digest or self.tag


def config_file():
    """labtool's client configuration (credentials, default registry): root only."""
    return os.path.join(paths.lib_dir(), "config.json")


def read_config():
    try:
        with open(config_file()) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UsageError(f"{config_file()} is not valid JSON: fix or remove it") from None


def default_registry():
    return os.environ.get("LABTOOL_REGISTRY", "") or read_config().get("registry", "")


def is_host(component):
    return "." in component or ":" in component or component == "localhost"


def names_registry(ref):
    """True if ``ref`` says which registry it lives on (``HOST/...``)."""
    first, slash, _ = ref.partition("/")
    return bool(slash) and is_host(first)


def parse(ref, default=None):
    """Split ``ref`` into a ``Reference``; raise UsageError when it is not a valid name."""
    text = ref
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise UsageError(f"invalid reference format: bad digest in '{ref}' (sha256:<64 hex digits>)")
    tag = ""
    last_colon, last_slash = name.rfind(":"), name.rfind("/")
    if last_colon > last_slash:
        name, tag = name[:last_colon], name[last_colon + 1:]
        if not _TAG.match(tag):
            raise UsageError(f"invalid reference format: bad tag in '{ref}'")
    if not tag and not digest:
        tag = "latest"
    host, path = "", name
    first, slash, rest = name.partition("/")
    if slash and is_host(first):
        host, path = first, rest
    else:
        host = default_registry() if default is None else default
        if host and "/" not in path:
            path = "library/" + path
    if not path or not all(_COMPONENT.match(c) for c in path.split("/")):
        raise UsageError(f"invalid reference format: repository name must be lowercase: '{ref}'"
                         if path != path.lower() else f"invalid reference format: '{ref}'")
    local = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return Reference(host, path, tag, digest, local)
