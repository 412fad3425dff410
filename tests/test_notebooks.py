"""The notebooks run top to bottom (with small parameters) so they cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, parameters: dict, tmp_path: Path) -> nbformat.NotebookNode:
    """Execute ``notebooks/name`` with ``parameters`` injected after its "parameters" cell."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells)
                 if "parameters" in cell.metadata.get("tags", []))
    overrides = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_guided_tour_runs(tmp_path):
    from yapo_interp.models import shipped_sae_layers

    if not shipped_sae_layers():
        pytest.fail("the guided tour needs the SAEs shipped for the embedded model")
    notebook = run_notebook("01_guided_tour.ipynb", {"PATCH_PAIRS": 1, "PATCH_LAYERS": [6, 9],
                                                     "EPOCHS": 1, "MAX_PAIRS": 8}, tmp_path)
    text = outputs_text(notebook)
    assert "chosen layer:" in text and "YaPO  d=+1:" in text and "feature" in text


def test_study_explorer_runs(tmp_path):
    example = Path(__file__).resolve().parent.parent / "examples" / "study_quick"
    notebook = run_notebook("02_explore_study.ipynb", {"RUN_DIR": str(example),
                                                       "FIGURES_DIR": str(tmp_path / "figures")},
                            tmp_path)
    assert "chosen layer" in outputs_text(notebook)
    assert any((tmp_path / "figures").glob("*.html"))
