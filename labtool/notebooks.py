"""``labtool notebooks --student DIR``: learner copies of the lab's notebooks.

In the lab's notebooks every exercise has a solution cell, tagged ``solution``, that
starts with its task as comments::

    # TODO: copy /bin/busybox into the rootfs and make a link per applet
    ...the solution...

A learner copy keeps the leading ``#`` lines of such a cell (the TODO), drops the
solution and every output, so nothing gives the answer away.
"""

import glob
import json
import os

from labtool.notebook import REPO

SOLUTION_TAG = "solution"


def _source(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def todo_of(cell):
    """The leading comment lines of a solution cell: what the learner must do."""
    lines = []
    for line in _source(cell).splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def is_solution(cell):
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def student_copy(nb):
    """Return a learner copy of a notebook (a dict in nbformat 4 shape)."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell["outputs"], cell["execution_count"] = [], None
        if is_solution(cell):
            cell["source"] = todo_of(cell)
            cell["metadata"]["tags"] = [t for t in cell["metadata"]["tags"] if t != SOLUTION_TAG] + ["todo"]
    return nb


def write_student_copies(target, source=None):
    """Write a learner copy of every notebook in ``source`` into ``target``; return paths."""
    source = source or os.path.join(REPO, "notebooks")
    os.makedirs(target, exist_ok=True)
    written = []
    for path in sorted(glob.glob(os.path.join(source, "*.ipynb"))):
        with open(path) as f:
            nb = json.load(f)
        out = os.path.join(target, os.path.basename(path))
        with open(out, "w") as f:
            json.dump(student_copy(nb), f, indent=1, ensure_ascii=False)
            f.write("\n")
        written.append(out)
    return written
