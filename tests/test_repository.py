"""Repository hygiene: notebooks are stored stripped (nbstripout), so diffs stay readable and
no executed output (or stale number) lands in the book's sources."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for folder in ("notebooks", "book") for p in (ROOT / folder).glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2, "expected the experiment and book notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stripped(path):
    cells = json.loads(path.read_text())["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        assert not cell.get("outputs"), f"{path.name} cell {index} has outputs: run nbstripout {path}"
        assert cell.get("execution_count") is None, (
            f"{path.name} cell {index} has an execution count: run nbstripout {path}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_cells_have_the_ids_nbstripout_gives_them(path):
    """nbformat 4.5 requires a unique id per cell (a cell added by hand without one makes nbformat
    warn at every build); nbstripout numbers them 0, 1, 2, ... in order."""
    notebook = json.loads(path.read_text())
    ids = [cell.get("id") for cell in notebook["cells"]]
    assert ids == [str(i) for i in range(len(ids))], f"{path.name}: cell ids {ids}: run nbstripout {path}"


#: The chapters that report results: a reader sees tables, figures and prose, and the code that
#: made them only on request.  (The tutorial chapters, own_model and whitening_math, show theirs.)
RESULT_CHAPTERS = ["table1_cifar.ipynb", "table2_imagenet.ipynb", "timing.ipynb", "conclusions.ipynb"]


@pytest.mark.parametrize("name", RESULT_CHAPTERS)
def test_result_chapters_hide_their_code(name):
    cells = json.loads((ROOT / "book" / name).read_text())["cells"]
    shown = [cell["id"] for cell in cells if cell["cell_type"] == "code"
             and not {"remove-input", "hide-input", "remove-cell"} & set(cell["metadata"].get("tags", []))]
    assert not shown, f"{name}: code cells {shown} print their code into the chapter; tag them remove-input " \
                      "(or hide-input, for code a reader may want to open)"
