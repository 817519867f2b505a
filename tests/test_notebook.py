"""The worked notebook runs top to bottom on CPU (nbclient, the venv's own kernel) in under 3 minutes."""
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lstm_from_the_equations.ipynb"


def test_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.monotonic()
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.monotonic() - t0
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "reference vs torch.nn.LSTM" in text and "gradcheck: True" in text
    assert "layer" in text and "r = " in text
    assert elapsed < 180, elapsed
