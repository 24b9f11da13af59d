"""Check the built docs site shows every plotly figure of the executed notebooks: each notebook
page must hold as many plotly figure divs as its executed copy has plotly figures (at least one),
and load plotly.js (require.js + plotly's CDN). Run by `make docs` after the build."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def plotly_outputs(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(
        'class="plotly-graph-div"' in str(out.get("data", {}).get("text/html", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def main(site: str = "site") -> int:
    bad = []
    notebooks = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
    if not notebooks:
        bad.append("docs/notebooks/ holds no executed notebook (run `make notebooks` first)")
    for nb in notebooks:
        page = ROOT / site / "notebooks" / nb.stem / "index.html"
        if not page.is_file():
            bad.append(f"{nb.name}: no rendered page at {page}")
            continue
        html = page.read_text(encoding="utf-8")
        want, got = plotly_outputs(nb), html.count('class="plotly-graph-div"')
        loads = "require.min.js" in html and "cdn.plot.ly" in html
        if want == 0 or got < want or "Plotly.newPlot" not in html or not loads:
            bad.append(
                f"{nb.name}: {got} plotly figures on the page ({want} in the executed notebook), "
                f"plotly.js loaded: {loads}"
            )
        else:
            print(f"{nb.name}: {got} plotly figures rendered")
    for line in bad:
        print(f"docs check: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
