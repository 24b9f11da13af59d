"""Execute every notebook headless and write the executed copies, with their outputs, to
docs/notebooks/ (ignored by git; the docs site renders them). The committed notebooks stay
without outputs. Plotly figures are written for a web page (PLOTLY_RENDERER=notebook_connected:
plotly.js from its CDN through require.js, which the docs pages include), so a page carries only its
figures' data. Widget state is not stored: the explorers need a live kernel (docs/explorers.md
has screenshots of them).

Run by `make notebooks` (and so by `make docs` and CI).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / "docs" / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PLOTLY_RENDERER", "notebook_connected")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        t = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
            store_widget_state=False,
        ).execute()
        tmp = out / f".{path.name}.tmp"
        nbformat.write(nb, tmp)
        tmp.replace(out / path.name)
        print(f"{path.name}: executed in {time.perf_counter() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
