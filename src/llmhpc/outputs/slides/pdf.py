"""The deck as PDF: headless Chromium prints the HTML deck; without a browser, matplotlib draws each slide."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

from llmhpc.outputs.slides.figures import CHROMIUM_NAMES, NOT_MEASURED, plain


def find_chromium() -> str | None:
    """$CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        found = shutil.which(os.environ["CHROMIUM"])
        if not found:
            raise FileNotFoundError(f"$CHROMIUM={os.environ['CHROMIUM']}: no such executable")
        return found
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def chromium_cmd(chromium: str, profile_dir, *args) -> list[str]:
    # --no-sandbox: containers and CI run as root, where Chromium's sandbox refuses to start.
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile_dir}", *args]


def pdf_with_chromium(chromium: str, html_path, pdf_path, timeout=180) -> None:
    html_path, pdf_path = Path(html_path).resolve(), Path(pdf_path).resolve()
    pdf_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(chromium_cmd(chromium, profile, "--no-pdf-header-footer", "--window-size=1280,720",
                                           f"--print-to-pdf={pdf_path}", html_path.as_uri()),
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise RuntimeError(f"{chromium} --print-to-pdf failed ({proc.returncode}): {proc.stderr[-2000:]}")


def pdf_with_matplotlib(deck: dict, pdf_path) -> None:
    """One page per slide from the same slide model, for machines without a browser (a cluster login node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    n = len(deck["slides"])
    with PdfPages(pdf_path, metadata={"Title": deck["title"], "CreationDate": None}) as pdf:
        for i, s in enumerate(deck["slides"], 1):
            fig = plt.figure(figsize=(13.333, 7.5))
            title_slide = s["layout"] == "title"
            fig.patches.append(plt.Rectangle((0, 0.86 if not title_slide else 0), 1, 0.14 if not title_slide else 1,
                                             transform=fig.transFigure, color="#14213d", zorder=-1))
            fig.text(0.04, 0.93 if not title_slide else 0.6, s["title"], color="white", fontsize=26 if not title_slide
                     else 34, weight="bold", va="center")
            has_image = bool(s["image"])
            width = 0.44 if has_image else 0.92
            chars = int(110 * width)
            lines = []
            for st in s["stats"]:
                lines.append(f"{plain(st['value'])}  {st['label']}")
            for b in s["bullets"]:
                wrapped = textwrap.wrap(plain(b), chars) or [""]
                lines += [("• " if not title_slide else "") + wrapped[0]] + ["   " + w for w in wrapped[1:]]
            if s["table"]:
                t = s["table"]
                cells = [t["header"]] + [[plain(c) for c in r] for r in t["rows"]]
                widths = [max(len(r[j]) for r in cells) for j in range(len(t["header"]))]
                lines += [""] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
            lines += [""] + [f"$ {c}" for c in s["code"]] if s["code"] else []
            y0 = 0.5 if title_slide else 0.82
            fig.text(0.04, y0, "\n".join(lines), va="top", fontsize=17 if title_slide else 13,
                     family="DejaVu Sans Mono", color="white" if title_slide else "#14213d", linespacing=1.5)
            if has_image:
                ax = fig.add_axes((0.5, 0.08, 0.47, 0.75))
                ax.axis("off")
                if s["image"]["exists"]:
                    ax.imshow(mpimg.imread(s["image"]["path"]))
                else:
                    ax.text(0.5, 0.5, f"{s['image']['name']}: {NOT_MEASURED}", ha="center", va="center", fontsize=16,
                            color="#6b7280")
            foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
            fig.text(0.04, 0.025, textwrap.shorten(foot, 150), fontsize=8, color="#6b7280")
            fig.text(0.96, 0.025, f"{i} / {n}", fontsize=9, color="#6b7280", ha="right")
            pdf.savefig(fig)
            plt.close(fig)


def render_pdf(deck: dict, html_path, pdf_path, log=print) -> str:
    """Chromium's print of the HTML deck where a Chromium is found, else matplotlib; returns which was used."""
    chromium = find_chromium()
    if chromium:
        pdf_with_chromium(chromium, html_path, pdf_path)
        log(f"PDF: printed {html_path} with {chromium}")
        return "chromium"
    pdf_with_matplotlib(deck, pdf_path)
    log(f"PDF: no Chromium found ({', '.join(CHROMIUM_NAMES)} or $CHROMIUM); drew the slides with matplotlib")
    return "matplotlib"


# --- PPTX --------------------------------------------------------------------------------------------------------
