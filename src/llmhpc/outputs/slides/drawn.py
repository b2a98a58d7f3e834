"""The deck drawn with matplotlib, for machines without a browser (a cluster's login node): the same slide model
and the same layout as the HTML deck (workflow/templates/deck.css), measured in the same 1280x720 CSS pixels: the
title bar, the big-number cards, bullets with the numbers in bold, tables with their header rule and striped rows,
one shell command per line, the plot on the right, the sources and the page number at the foot. A slide whose text
does not fit has its fonts lowered a little, as deck.js does in the browser."""

from __future__ import annotations

import functools
import re

from llmhpc.outputs.slides.figures import NOT_MEASURED

W, H = 1280, 720
HEADER, FOOTER, PAD_X = 104, 40, 56
NAVY, ACCENT, ACCENT_SOFT, INK, GREY, LINE = "#14213d", "#1f6fd1", "#e8f0fb", "#1f2937", "#6b7280", "#e5e7eb"
ZEBRA, CODE_INK, PROMPT, COMMENT = "#f8fafc", "#e5edf8", "#7fb2f0", "#8ea3bf"
MONO = ["DejaVu Sans Mono"]
PT = 0.75  # CSS pixels to points at 96 dpi


@functools.cache
def sans() -> list[str]:
    """Liberation Sans (Arial's metrics, what Chromium draws the deck's sans-serif with here) where matplotlib
    knows it, else matplotlib's own DejaVu Sans."""
    from matplotlib import font_manager

    known = {f.name for f in font_manager.fontManager.ttflist}
    return ["Liberation Sans"] if "Liberation Sans" in known else ["DejaVu Sans"]


class Page:
    """One slide: an axes over the whole figure in CSS pixels (y down). Drawing is first recorded (so that a
    layout can be measured, then drawn at the font scale that fits) and then played."""

    def __init__(self, fig):
        from matplotlib.font_manager import FontProperties

        self.fig = fig
        self.ax = fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, W)
        self.ax.set_ylim(H, 0)
        self.ax.axis("off")
        self.renderer = fig.canvas.get_renderer()
        self.FontProperties = FontProperties
        self.ops: list = []
        self._widths: dict = {}

    def font(self, size, bold=False, mono=False):
        return self.FontProperties(family=MONO if mono else sans(), size=size * PT, weight="bold" if bold else "normal")

    def width(self, text, size, bold=False, mono=False) -> float:
        key = (text, size, bold, mono)
        if key not in self._widths:
            w, _, _ = self.renderer.get_text_width_height_descent(text, self.font(size, bold, mono), ismath=False)
            self._widths[key] = w * 96 / self.fig.dpi
        return self._widths[key]

    def text(self, x, y, s, size, color=INK, bold=False, mono=False, ha="left"):
        """y is the top of a line of height 1.3 * size."""
        self.ops.append(("text", x, y + size * 0.98, s, size, color, bold, mono, ha))

    def rect(self, x, y, w, h, color, rounded=0.0):
        self.ops.append(("rect", x, y, w, h, color, rounded))

    def play(self):
        from matplotlib.patches import FancyBboxPatch, Rectangle

        for op in self.ops:
            if op[0] == "image":
                self.picture(*op[1:])
            elif op[0] == "text":
                _, x, y, s, size, color, bold, mono, ha = op
                self.ax.text(x, y, s, fontproperties=self.font(size, bold, mono), color=color, ha=ha,
                             va="baseline")
            else:
                _, x, y, w, h, color, rounded = op
                patch = (FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad=0,rounding_size={rounded}", color=color,
                                        linewidth=0) if rounded else Rectangle((x, y), w, h, color=color, linewidth=0))
                self.ax.add_patch(patch)
        self.ops = []

    def picture(self, path, x, y, w, h):
        """A PNG in the box, its aspect kept, centred across and at the top (as deck.css's object-fit: contain
        with object-position: top)."""
        import matplotlib.image as mpimg

        pixels = mpimg.imread(path)
        ih, iw = pixels.shape[:2]
        scale = min(w / iw, h / ih)
        dw, dh = iw * scale, ih * scale
        left, top = x + (w - dw) / 2, y
        ax = self.fig.add_axes((left / W, 1 - (top + dh) / H, dw / W, dh / H))
        ax.imshow(pixels, interpolation="antialiased")
        ax.axis("off")


# --- rich text ----------------------------------------------------------------------------------------------------
def style(g: dict, size: float, on_dark=False) -> dict:
    """A segment's look, as deck.css gives it: numbers bold in the accent colour, names in monospace."""
    if g["kind"] == "num":
        return {"size": size, "bold": True, "color": "#ffffff" if on_dark else ACCENT, "mono": False}
    if g["kind"] in ("name", "code"):
        return {"size": size * 0.9, "bold": False, "color": "#ffffff" if on_dark else INK, "mono": True}
    return {"size": size, "bold": False, "color": "#dbe4f0" if on_dark else INK, "mono": False}


def flow(page: Page, segments: list, x, y, width, size, *, on_dark=False, bold_text=False, number_colour=None,
         text_colour=None) -> float:
    """Rich text wrapped at `width`, words kept whole (a number is never broken); returns the height used."""
    line_h, cx, cy = size * 1.35, x, y
    for g in segments:
        st = style(g, size, on_dark)
        if number_colour and g["kind"] == "num":
            st["color"] = number_colour
        if text_colour and g["kind"] == "text":
            st["color"] = text_colour
        bold = st["bold"] or bold_text
        words = [g["text"]] if g["kind"] == "num" else re.findall(r"\S+\s*|\s+", g["text"])
        for word in words:
            w = page.width(word.rstrip(), st["size"], bold, st["mono"])
            if cx + w > x + width + 0.5 and cx > x:
                cx, cy = x, cy + line_h
                word = word.lstrip()
                if not word:
                    continue
            if g["kind"] == "name":
                page.rect(cx - 2, cy + 2, w + 4, line_h - 4, "#ffffff22" if on_dark else ACCENT_SOFT, rounded=4)
            page.text(cx, cy + (line_h - size * 1.3) / 2 + (size - st["size"]) * 0.8, word.rstrip(), st["size"],
                      st["color"], bold, st["mono"])
            cx += page.width(word, st["size"], bold, st["mono"]) if word.endswith(" ") else w
    return cy + line_h - y


def measure_flow(page: Page, segments, width, size, **kw) -> float:
    saved = len(page.ops)
    h = flow(page, segments, 0, 0, width, size, **kw)
    del page.ops[saved:]
    return h


# --- the parts of a slide ---------------------------------------------------------------------------------------
def bullets(page: Page, items: list, x, y, width, size) -> float:
    top = y
    for b in items:
        page.rect(x + 2, y + size * 0.5 - 1, 10, 10, ACCENT, rounded=2)
        y += flow(page, b, x + 28, y, width - 28, size) + 12 * size / 23
    return y - top - 12 * size / 23 if items else 0


def stats(page: Page, items: list, x, y, width, fs) -> float:
    gap, pad = 24, 14 * fs
    cw = (width - gap * (len(items) - 1)) / len(items)
    h = pad * 2 + 44 * fs * 1.1 + 4 + 16 * fs * 1.3
    for i, st in enumerate(items):
        cx = x + i * (cw + gap)
        page.rect(cx, y, cw, h, ACCENT_SOFT, rounded=10)
        page.rect(cx, y, 6, h, ACCENT)
        flow(page, st["value"], cx + 22, y + pad, cw - 30, 44 * fs, bold_text=True, number_colour=NAVY)
        page.text(cx + 22, y + pad + 44 * fs * 1.1 + 4, st["label"], 16 * fs, GREY)
    return h


def code(page: Page, lines: list, x, y, width, fs) -> float:
    """One command per line, never wrapped: "$ command", its comment right-aligned on the same line."""
    size, pad = 17 * fs, 14 * fs
    line_h = size * 1.5
    h = pad * 2 + line_h * len(lines) + 6 * fs * (len(lines) - 1)
    page.rect(x, y, width, h, NAVY, rounded=10)
    for i, c in enumerate(lines):
        cmd, _, comment = c.partition("   # ")
        ly = y + pad + i * (line_h + 6 * fs) + (line_h - size * 1.3) / 2
        page.text(x + 22, ly, "$", size, PROMPT, mono=True)
        page.text(x + 22 + page.width("$ ", size, mono=True), ly, cmd, size, CODE_INK, mono=True)
        if comment:
            page.text(x + width - 22, ly + size * 0.05, "# " + comment, size * 0.9, COMMENT, ha="right")
    return h


def code_width(page: Page, lines: list, fs) -> float:
    size = 17 * fs
    return max(page.width("$ " + c.partition("   # ")[0], size, mono=True) + 24 +
               (page.width("# " + c.partition("   # ")[2], size * 0.9) if "   # " in c else 0) for c in lines) + 44


def tokens(page: Page, cell: list, size, bold=False) -> list[float]:
    """Widths of the pieces a cell may wrap between: words, and numbers whole."""
    out = []
    for g in cell:
        st = style(g, size)
        words = [g["text"]] if g["kind"] == "num" else g["text"].split()
        out += [page.width(w, st["size"], st["bold"] or bold, st["mono"]) for w in words]
    return out


def column_widths(page: Page, cells: list, width, size) -> list[float] | None:
    """As a browser's automatic table layout: each column as wide as its widest content, spare room shared out
    in proportion; where the table is too wide, columns narrowed towards their longest word (and their cells
    wrap). None where even that does not fit."""
    widest, least = [], []
    for j in range(len(cells[0])):
        pieces = [tokens(page, row[j], size * (0.72 if r == 0 else 1), bold=r == 0 or j == 0)
                  for r, row in enumerate(cells)]
        widest.append(max(sum(p) + 5 * max(0, len(p) - 1) for p in pieces) + 10)
        least.append(max((max(p) for p in pieces if p), default=0) + 10)
    if sum(widest) <= width:
        return [w * width / sum(widest) for w in widest]
    if sum(least) > width:
        return None
    spare = (width - sum(least)) / (sum(widest) - sum(least))
    return [m + (w - m) * spare for w, m in zip(widest, least)]


def table(page: Page, t: dict, x, y, width, fs) -> float | None:
    """The table's height, or None where its columns cannot fit the width."""
    size = 18 * fs
    header = [[{"text": h.upper(), "kind": "text"}] for h in t["header"]]
    widths = column_widths(page, [header, *t["rows"]], width, size)
    if widths is None:
        return None
    cy = y
    for r, row in enumerate([header, *t["rows"]]):
        pad = 0 if r == 0 else 8 * fs
        cell_size = size * 0.72 if r == 0 else size
        heights = [measure_flow(page, c, widths[j] - 10, cell_size, bold_text=r == 0 or j == 0)
                   for j, c in enumerate(row)]
        rh = max(heights) + 2 * pad
        if r % 2 == 1:
            page.rect(x, cy, width, rh, ZEBRA)
        for j, c in enumerate(row):
            flow(page, c, x + sum(widths[:j]), cy + pad, widths[j] - 10, cell_size, bold_text=r == 0 or j == 0,
                 number_colour=INK, text_colour=GREY if r == 0 else None)
        cy += rh
        if r == 0:
            cy += 8
            page.rect(x, cy, width, 2, NAVY)
            cy += 2
        else:
            page.rect(x, cy - 1, width, 1, LINE)
    return cy - y


def image(page: Page, img: dict, x, y, w, h) -> None:
    if not img["exists"]:
        page.rect(x, y + h * 0.15, w, h * 0.7, "#cbd5e1", rounded=14)
        page.rect(x + 3, y + h * 0.15 + 3, w - 6, h * 0.7 - 6, "#ffffff", rounded=12)
        page.text(x + w / 2, y + h / 2 - 30, img["name"], 24, INK, mono=True, ha="center")
        page.text(x + w / 2, y + h / 2 + 4, NOT_MEASURED, 24, GREY, ha="center")
        return
    page.ops.append(("image", img["path"], x, y, w, h))
