"""The deck as one self-contained HTML file (jinja2 templates in workflow/templates)."""

from __future__ import annotations

import base64
from pathlib import Path

from llmhpc.outputs.slides.figures import NOT_MEASURED


def data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(deck: dict, templates_dir) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    figures = deck["figures"]
    images = {s["image"]["path"]: data_uri(s["image"]["path"])
              for s in deck["slides"] if s["image"] and s["image"]["exists"]}
    return env.get_template("deck.html.j2").render(deck=deck, figures=figures, images=images,
                                                   not_measured=NOT_MEASURED)


