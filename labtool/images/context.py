"""The build context: the directory ``labtool build`` is given, minus what ``.dockerignore`` says.

Docker's client packs the context into a tar and sends it to the daemon ("Sending build
context to Docker daemon  2.048kB"): everything COPY and ADD may read, nothing else. A big
context (a forgotten ``node_modules`` or ``.git``) makes every build slow; ``.dockerignore``
leaves files out, one pattern per line::

    # comments
    *.log           a name in the top directory      (``*`` stops at ``/``, ``?`` is one character)
    **/*.tmp        at any depth
    build/          a directory and everything in it
    !keep.log       an exception: the last pattern that matches a path decides

Also here: the file trees COPY reads from (the context, or another stage's image for
``COPY --from``), with the same two questions: what is at this path, what is in this directory.
"""

import fnmatch
import os
import re
import tarfile

from labtool import changes


class Context:
    """The build context directory, as the Dockerfile's COPY and ADD see it."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.patterns = _read_ignore(os.path.join(self.root, ".dockerignore"))

    def ignored(self, rel):
        """Does ``.dockerignore`` leave ``rel`` (a path inside the context) out?"""
        rel = rel.strip("/")
        out = False
        for negated, regex in self.patterns:
            parts = rel.split("/")
            # a pattern that names a directory takes what is inside it too
            if any(regex.match("/".join(parts[:n])) for n in range(len(parts), 0, -1)):
                out = not negated
        return out

    def lookup(self, rel):
        """The host path of ``rel``, or None if it is not there or is ignored."""
        rel = rel.strip("/")
        path = os.path.join(self.root, rel) if rel else self.root
        if rel and self.ignored(rel):
            return None
        return path if os.path.lexists(path) else None

    def listdir(self, rel):
        path = self.lookup(rel)
        if path is None or not os.path.isdir(path) or os.path.islink(path):
            return []
        return sorted(n for n in os.listdir(path) if not self.ignored(os.path.join(rel, n)))

    def size(self):
        """How many bytes the context is as a tar (what Docker's client sends)."""
        counter = _Counter()
        tar = tarfile.open(fileobj=counter, mode="w")
        for rel in walk(self, ""):
            info = tar.gettarinfo(os.path.join(self.root, rel), arcname=rel)
            if info is None:
                continue
            if info.isreg():
                with open(os.path.join(self.root, rel), "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
        size = counter.size + 2 * tarfile.BLOCKSIZE      # the end: two empty blocks (Go's tar adds no padding)
        tar.close()
        return size


class ImageTree:
    """The files of an image (its layers merged), for ``COPY --from=STAGE``."""

    def __init__(self, layers):
        self.layers = layers

    def lookup(self, rel):
        return changes.find_in_layers(self.layers, "/" + rel.strip("/"))

    def listdir(self, rel):
        path = self.lookup(rel)
        if path is None or not os.path.isdir(path) or os.path.islink(path):
            return []
        return sorted(changes.names_in_layers(self.layers, "/" + rel.strip("/")))


def walk(tree, rel):
    """Every path below ``rel`` in ``tree``, parents first."""
    for name in tree.listdir(rel):
        inside = os.path.join(rel, name) if rel else name
        yield inside
        path = tree.lookup(inside)
        if path and os.path.isdir(path) and not os.path.islink(path):
            yield from walk(tree, inside)


def glob(tree, pattern):
    """The paths in ``tree`` that ``pattern`` (``*.html``, ``src/*/main.c``) matches."""
    found = [""]
    for part in [p for p in os.path.normpath(pattern.strip("/")).split("/") if p not in ("", ".")]:
        if not any(c in part for c in "*?["):
            found = [os.path.join(f, part) if f else part for f in found]
            found = [f for f in found if tree.lookup(f) is not None]
            continue
        found = [os.path.join(f, n) if f else n for f in found for n in tree.listdir(f) if fnmatch.fnmatchcase(n, part)]
    return [f for f in found if tree.lookup(f) is not None]


def _read_ignore(path):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    patterns = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        if line in (".", ""):
            continue
        patterns.append((negated, _regex(line)))
    return patterns


def _regex(pattern):
    """A .dockerignore pattern as a regular expression (Go's filepath.Match, plus ``**``)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            cls = pattern[i + 1:end] if end > 0 else ""
            out += "[" + ("^" + cls[1:] if cls.startswith("^") else cls) + "]" if end > 0 else re.escape(c)
            i = end + 1 if end > 0 else i + 1
        elif c == "\\" and i + 1 < len(pattern):
            out, i = out + re.escape(pattern[i + 1]), i + 2
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out + r"\Z")


class _Counter:
    """A file object that only counts what is written to it."""

    def __init__(self):
        self.size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)

    def tell(self):
        return self.size
