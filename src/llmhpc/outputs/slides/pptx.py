"""The deck as an editable PPTX (python-pptx): the same slide model as the HTML deck, drawn with real text boxes,
tables and pictures so that a team can still edit it before the interview."""

from __future__ import annotations

import math

from llmhpc.outputs.slides.figures import NOT_MEASURED, plain


def render_pptx(deck: dict, pptx_path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    drawer = _SlideDrawer(prs)
    for i, s in enumerate(deck["slides"], 1):
        drawer.draw(s, i, len(deck["slides"]))
    prs.save(pptx_path)


class _SlideDrawer:
    """Draws one slide model dict onto a new PPTX slide, top to bottom: title bar, stats, bullets, code, table,
    image on the right, sources and page number at the foot."""

    def __init__(self, prs):
        from pptx.dml.color import RGBColor

        self.prs, self.W, self.H = prs, prs.slide_width, prs.slide_height
        self.layout = prs.slide_layouts[5]  # "Title Only": the title is a real title placeholder, the rest is ours
        self.navy, self.accent = RGBColor(0x14, 0x21, 0x3D), RGBColor(0x1F, 0x6F, 0xD1)
        self.grey, self.ink, self.pale = RGBColor(0x6B, 0x72, 0x80), RGBColor(0x1F, 0x29, 0x37), RGBColor(0xDB, 0xE4, 0xF0)

    def runs(self, paragraph, segments, size, color=None, bold_numbers=True):
        from pptx.util import Pt

        for g in segments:
            r = paragraph.add_run()
            r.text = g["text"]
            r.font.size = Pt(size)
            r.font.color.rgb = self.accent if g["kind"] == "num" and bold_numbers else (color or self.ink)
            r.font.bold = g["kind"] == "num" and bold_numbers
            if g["kind"] == "code":
                r.font.name = "Consolas"

    def box(self, left, top, width, height):
        tb = self.slide.shapes.add_textbox(left, top, width, height)
        tb.text_frame.word_wrap = True
        return tb.text_frame

    def paragraphs(self, tf, items):
        for j, item in enumerate(items):
            yield (tf.paragraphs[0] if j == 0 else tf.add_paragraph()), item

    def draw(self, s: dict, number: int, total: int) -> None:
        from pptx.util import Inches

        self.slide = self.prs.slides.add_slide(self.layout)
        self.title_bar(s)
        if s["layout"] == "title":
            tf = self.box(Inches(0.5), Inches(3.8), self.W - Inches(1), Inches(2.5))
            for j, (p, b) in enumerate(self.paragraphs(tf, s["bullets"])):
                self.runs(p, b, 24 if j == 0 else 18, self.pale, bold_numbers=False)
        else:
            self.body(s)
        tf = self.box(self.W - Inches(1.3), self.H - Inches(0.45), Inches(0.9), Inches(0.35))
        self.runs(tf.paragraphs[0], [{"text": f"{number} / {total}", "kind": "text"}], 10, self.grey)
        self.slide.notes_slide.notes_text_frame.text = s["notes"] or s["title"]

    def title_bar(self, s: dict) -> None:
        from pptx.dml.color import RGBColor
        from pptx.enum.shapes import MSO_SHAPE
        from pptx.enum.text import PP_ALIGN
        from pptx.util import Inches, Pt

        is_title = s["layout"] == "title"
        bar = self.slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, 0, 0, self.W, self.H if is_title else Inches(1.1))
        bar.fill.solid()
        bar.fill.fore_color.rgb = self.navy
        bar.line.fill.background()
        self.slide.shapes._spTree.remove(bar._element)
        self.slide.shapes._spTree.insert(2, bar._element)  # behind the title
        title = self.slide.shapes.title
        title.left, title.top, title.width = Inches(0.5), Inches(2.2) if is_title else Inches(0.15), self.W - Inches(1)
        title.height = Inches(1.4) if is_title else Inches(0.8)
        title.text = s["title"]
        tp = title.text_frame.paragraphs[0]
        tp.font.size, tp.font.bold, tp.font.color.rgb = Pt(40 if is_title else 30), True, RGBColor(255, 255, 255)
        tp.alignment = PP_ALIGN.LEFT

    def body(self, s: dict) -> None:
        from pptx.util import Inches

        left_w = Inches(5.9) if s["image"] else self.W - Inches(1)
        top = Inches(1.35)
        if s["stats"]:
            top = self.stats(s["stats"], top)
        if s["bullets"]:
            top = self.bullets(s["bullets"], top, left_w)
        if s["code"]:
            tf = self.box(Inches(0.5), top, left_w, Inches(0.4) * len(s["code"]))
            for p, c in self.paragraphs(tf, s["code"]):
                self.runs(p, [{"text": "$ " + c, "kind": "code"}], 14)
            top += Inches(0.4) * len(s["code"]) + Inches(0.2)
        if s["table"]:
            self.table(s["table"], top, left_w)
        if s["image"]:
            self.image(s["image"])
        foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
        tf = self.box(Inches(0.5), self.H - Inches(0.45), self.W - Inches(2), Inches(0.35))
        self.runs(tf.paragraphs[0], [{"text": foot, "kind": "text"}], 9, self.grey)

    def stats(self, stats: list, top):
        from pptx.util import Inches, Pt

        cw = (self.W - Inches(1)) // len(stats)
        for j, st in enumerate(stats):
            tf = self.box(Inches(0.5) + j * cw, top, cw - Inches(0.2), Inches(1.2))
            self.runs(tf.paragraphs[0], st["value"], 36)
            p = tf.add_paragraph()
            p.text = st["label"]
            p.font.size, p.font.color.rgb = Pt(14), self.grey
        return top + Inches(1.4)

    def bullets(self, bullets: list, top, left_w):
        from pptx.util import Inches

        # PowerPoint does not report wrapped heights: estimate lines from ~0.5 em per character.
        per_line = max(20, int(left_w / Inches(1) * 72 / (16 * 0.5)))
        lines = sum(max(1, math.ceil((len(plain(b)) + 2) / per_line)) for b in bullets)
        height = Inches(16 * 1.2 / 72) * lines + Inches(0.08) * len(bullets)
        tf = self.box(Inches(0.5), top, left_w, height)
        for p, b in self.paragraphs(tf, bullets):
            self.runs(p, [{"text": "• ", "kind": "text"}, *b], 16)
        return top + height + Inches(0.2)

    def table(self, t: dict, top, left_w) -> None:
        from pptx.util import Inches, Pt

        rows, cols = len(t["rows"]) + 1, len(t["header"])
        shape = self.slide.shapes.add_table(rows, cols, Inches(0.5), top, left_w, Inches(0.38) * rows)
        for j, h in enumerate(t["header"]):
            cell = shape.table.cell(0, j)
            cell.text = h
            cell.text_frame.paragraphs[0].font.size = Pt(13)
        for r, row in enumerate(t["rows"], 1):
            for j, c in enumerate(row):
                self.runs(shape.table.cell(r, j).text_frame.paragraphs[0], c, 13, bold_numbers=False)

    def image(self, image: dict) -> None:
        from pptx.util import Emu, Inches

        box_l, box_t, box_w, box_h = Inches(6.7), Inches(1.4), Inches(6.2), Inches(5.4)
        if not image["exists"]:
            tf = self.box(box_l, box_t + box_h // 2, box_w, Inches(0.6))
            self.runs(tf.paragraphs[0], [{"text": f"{image['name']}: {NOT_MEASURED}", "kind": "text"}], 18, self.grey)
            return
        from PIL import Image

        with Image.open(image["path"]) as im:
            w, h = im.size
        scale = min(box_w / w, box_h / h)
        pw, ph = int(w * scale), int(h * scale)
        self.slide.shapes.add_picture(image["path"], box_l + (box_w - pw) // 2, box_t + (box_h - ph) // 2,
                                      Emu(pw), Emu(ph))
