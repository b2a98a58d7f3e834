"""The deck as PDF: headless Chromium prints the HTML deck; without a browser, matplotlib draws each slide in
the same layout (drawn.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from llmhpc.outputs.slides import drawn
from llmhpc.outputs.slides.figures import CHROMIUM_NAMES


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
    """One page per slide from the same slide model and in the same layout as the HTML deck (drawn.py), for
    machines without a browser (a cluster's login node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    n = len(deck["slides"])
    with matplotlib.rc_context({"pdf.fonttype": 42}), \
            PdfPages(pdf_path, metadata={"Title": deck["title"], "CreationDate": None}) as pdf:
        for i, s in enumerate(deck["slides"], 1):
            fig = plt.figure(figsize=(drawn.W / 96, drawn.H / 96), dpi=96)
            page = drawn.Page(fig)
            (title_page if s["layout"] == "title" else body_page)(page, s)
            footer(page, s, f"{deck['team']} · {i} / {n}")
            page.play()
            pdf.savefig(fig)
            plt.close(fig)


def wrap(page: drawn.Page, text: str, width, size, bold=False) -> list[str]:
    lines = [""]
    for word in text.split():
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and page.width(trial, size, bold) > width:
            lines.append(word)
        else:
            lines[-1] = trial
    return lines


def title_page(page: drawn.Page, s: dict) -> None:
    """The title slide: the gradient, the title, a rule, then team, members, event and run."""
    import numpy as np

    x, y = np.meshgrid(np.linspace(0, 1, 64), np.linspace(0, 1, 36))
    t = (x * drawn.W + y * drawn.H) / (drawn.W + drawn.H) / 1.4  # 135 degrees, the last stop at 140 %
    stops = [(0, (0x14, 0x21, 0x3D)), (0.6 / 1.4, (0x1B, 0x3A, 0x6B)), (1, (0x1F, 0x6F, 0xD1))]
    rgb = np.stack([np.interp(t, [p for p, _ in stops], [c[k] / 255 for _, c in stops]) for k in range(3)], axis=-1)
    page.ax.imshow(rgb, extent=(0, drawn.W, drawn.H, 0), aspect="auto", interpolation="bilinear", zorder=0)
    page.ax.set_xlim(0, drawn.W)
    page.ax.set_ylim(drawn.H, 0)
    y = 150
    for line in wrap(page, s["title"], 1050, 56, bold=True):
        page.text(96, y, line, 56, "#ffffff", bold=True)
        y += 56 * 1.15
    y += 24
    page.rect(96, y, 720, 4, "#7fb2f0")
    y += 28
    for j, b in enumerate(s["bullets"]):
        size = 34 if j == 0 else 22
        y += drawn.flow(page, b, 96, y, 720, size, on_dark=True, bold_text=j == 0) + 10


def body_page(page: drawn.Page, s: dict) -> None:
    """Title bar, then the content at the largest font scale (1 down to 0.76) at which it fits."""
    page.rect(0, 0, drawn.W, drawn.HEADER, drawn.NAVY)
    page.rect(0, drawn.HEADER - 6, drawn.W, 6, drawn.ACCENT)
    lines = wrap(page, s["title"], drawn.W - 2 * drawn.PAD_X, 38, bold=True)
    for k, line in enumerate(lines):
        page.text(drawn.PAD_X, (drawn.HEADER - 6) / 2 - 38 * 1.15 * len(lines) / 2 + k * 38 * 1.15, line, 38,
                  "#ffffff", bold=True)
    mark, fs = len(page.ops), 1.0
    while not content(page, s, fs) and fs > 0.76:
        del page.ops[mark:]
        fs = round(fs - 0.04, 2)


def content(page: drawn.Page, s: dict, fs: float) -> bool:
    """Lays out stats, then the text column (bullets, commands, table) beside the plot; False where it
    overflows the slide."""
    x0, y0, x1, y1 = drawn.PAD_X, drawn.HEADER + 28, drawn.W - drawn.PAD_X, drawn.H - drawn.FOOTER - 12
    gap, y = 20 * fs, y0
    if s["stats"]:
        y += drawn.stats(page, s["stats"], x0, y, x1 - x0, fs) + gap
    text_w = (x1 - x0 - 36) * 0.4 if s["image"] else x1 - x0
    parts = []
    if s["bullets"]:
        size = (20 if s["image"] else 23) * fs
        parts.append(lambda x, yy, m: drawn.bullets(page, s["bullets"], x, yy, text_w, size))
    if s["code"]:
        parts.append(lambda x, yy, m: drawn.code(page, s["code"], x, yy, text_w, fs))
    if s["table"]:
        parts.append(lambda x, yy, m: drawn.table(page, s["table"], x, yy, text_w, fs))
    mark = len(page.ops)
    heights = [part(x0, 0, True) for part in parts]
    del page.ops[mark:]
    if None in heights:  # a table whose columns cannot fit
        return False
    text_h = sum(heights) + 18 * fs * max(0, len(heights) - 1)
    top = y  # from under the header down, as deck.css lays it out: no empty band above the text
    for part, h in zip(parts, heights):
        part(x0, top, False)
        top += h + 18 * fs
    if s["image"]:
        drawn.image(page, s["image"], x0 + text_w + 36, y, x1 - x0 - text_w - 36, y1 - y)
    wide = s["code"] and drawn.code_width(page, s["code"], fs) > text_w
    return y + text_h <= y1 and not wide


def footer(page: drawn.Page, s: dict, right: str) -> None:
    title = s["layout"] == "title"
    y = drawn.H - drawn.FOOTER
    if not title:
        page.rect(0, y, drawn.W, 1, drawn.LINE)
    colour = "#9fb3cf" if title else drawn.GREY
    page.text(drawn.W - drawn.PAD_X, y + 12, right, 13, colour, ha="right")
    room = drawn.W - 2 * drawn.PAD_X - page.width(right, 13) - 24
    foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
    while foot and page.width(foot, 13) > room:
        foot = foot[:-2].rstrip() + "…"
    page.text(drawn.PAD_X, y + 12, foot, 13, colour)


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
