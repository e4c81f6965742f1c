"""The notebooks: learner copies, and that each one runs up to its first TODO.

(nbval runs the full notebooks with their solutions: see pytest.ini.)
"""

import glob
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO
from labtool import notebooks

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_student_copy_keeps_the_todo_and_drops_the_solution():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["solution"]}, "execution_count": 3,
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "answer\n"}],
         "source": "# TODO: make a rootfs\n# in /tmp/r\nsh('cp /bin/busybox /tmp/r')\n"},
        {"cell_type": "markdown", "metadata": {}, "source": "text"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    copy = notebooks.student_copy(nb)
    cell = copy["cells"][0]
    assert cell["source"] == "# TODO: make a rootfs\n# in /tmp/r\n"
    assert cell["outputs"] == [] and cell["execution_count"] is None
    assert cell["metadata"]["tags"] == ["todo"]
    assert nb["cells"][0]["source"].endswith("/tmp/r')\n")          # the original is untouched


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_every_exercise_has_a_todo_and_a_check(path):
    nb = json.load(open(path))
    cells = nb["cells"]
    solutions = [i for i, c in enumerate(cells) if notebooks.is_solution(c)]
    assert solutions, "a notebook without exercises"
    for i in solutions:
        assert notebooks.todo_of(cells[i]).startswith("# TODO"), f"cell {i} has no TODO comment first"
        following = "".join("".join(c["source"]) for c in cells[i + 1:i + 3])
        assert "check." in following, f"the exercise in cell {i} has no check after it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_learner_copy_runs_up_to_its_first_todo(path, tmp_path):
    out = notebooks.write_student_copies(str(tmp_path), os.path.dirname(path))
    copy = nbformat.read(os.path.join(tmp_path, os.path.basename(path)), as_version=4)
    assert os.path.join(tmp_path, os.path.basename(path)) in out
    first_todo = next(i for i, c in enumerate(copy.cells) if "todo" in c.metadata.get("tags", []))
    copy.cells = copy.cells[:first_todo]
    NotebookClient(copy, timeout=120, resources={"metadata": {"path": os.path.dirname(path)}}).execute()
