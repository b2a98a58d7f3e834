"""The slides stage: build the slide model from the summary and render it as HTML, PDF and PPTX."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmhpc.outputs.slides.html import render_html
from llmhpc.outputs.slides.pdf import render_pdf
from llmhpc.outputs.slides.pptx import render_pptx


def render_all(deck: dict, templates_dir, out: dict, log=print) -> dict:
    """out: {"html", "pdf", "pptx", "json"} paths. Writes all four; returns the slide model as written."""
    for p in out.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    Path(out["html"]).write_text(render_html(deck, templates_dir), encoding="utf-8")
    log(f"HTML: {out['html']} ({len(deck['slides'])} slides)")
    # The PPTX is built while Chromium prints the PDF (a separate process): the job waits for the longer of the two.
    with ThreadPoolExecutor(1) as pool:
        pptx = pool.submit(render_pptx, deck, out["pptx"])
        renderer = render_pdf(deck, out["html"], out["pdf"], log=log)
        pptx.result()
    log(f"PPTX: {out['pptx']}")
    deck = {**deck, "pdf_renderer": renderer}
    Path(out["json"]).write_text(json.dumps(deck, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return deck
