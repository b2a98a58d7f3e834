"""The deck as an editable PPTX (python-pptx)."""

from __future__ import annotations

import math

from llmhpc.outputs.slides.figures import NOT_MEASURED, plain


def render_pptx(deck: dict, pptx_path) -> None:
    from pptx import Presentation
    from pptx.dml.color import RGBColor
    from pptx.enum.shapes import MSO_SHAPE
    from pptx.enum.text import PP_ALIGN
    from pptx.util import Emu, Inches, Pt

    navy, accent, grey, ink = RGBColor(0x14, 0x21, 0x3D), RGBColor(0x1F, 0x6F, 0xD1), RGBColor(0x6B, 0x72, 0x80), \
        RGBColor(0x1F, 0x29, 0x37)
    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    W = prs.slide_width
    layout = prs.slide_layouts[5]  # "Title Only": the title is a real title placeholder, the rest is ours
    n = len(deck["slides"])

    def runs(paragraph, segments, size, color=ink, bold_numbers=True):
        for g in segments:
            r = paragraph.add_run()
            r.text = g["text"]
            r.font.size = Pt(size)
            r.font.color.rgb = accent if g["kind"] == "num" and bold_numbers else color
            r.font.bold = g["kind"] == "num" and bold_numbers
            if g["kind"] == "code":
                r.font.name = "Consolas"

    def box(left, top, width, height):
        tb = slide.shapes.add_textbox(left, top, width, height)
        tb.text_frame.word_wrap = True
        return tb.text_frame

    for i, s in enumerate(deck["slides"], 1):
        slide = prs.slides.add_slide(layout)
        title = slide.shapes.title
        is_title = s["layout"] == "title"
        bar = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, 0, 0, W, prs.slide_height if is_title else Inches(1.1))
        bar.fill.solid()
        bar.fill.fore_color.rgb = navy
        bar.line.fill.background()
        slide.shapes._spTree.remove(bar._element)
        slide.shapes._spTree.insert(2, bar._element)  # behind the title
        title.left, title.top, title.width = Inches(0.5), Inches(2.2) if is_title else Inches(0.15), W - Inches(1)
        title.height = Inches(1.4) if is_title else Inches(0.8)
        title.text = s["title"]
        tp = title.text_frame.paragraphs[0]
        tp.font.size, tp.font.bold, tp.font.color.rgb = Pt(40 if is_title else 30), True, RGBColor(255, 255, 255)
        tp.alignment = PP_ALIGN.LEFT
        if is_title:
            tf = box(Inches(0.5), Inches(3.8), W - Inches(1), Inches(2.5))
            for j, b in enumerate(s["bullets"]):
                p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                runs(p, b, 24 if j == 0 else 18, RGBColor(0xDB, 0xE4, 0xF0), bold_numbers=False)
        else:
            has_image = bool(s["image"])
            left_w = Inches(5.9) if has_image else W - Inches(1)
            top = Inches(1.35)
            if s["stats"]:
                cw = (W - Inches(1)) // len(s["stats"])
                for j, st in enumerate(s["stats"]):
                    tf = box(Inches(0.5) + j * cw, top, cw - Inches(0.2), Inches(1.2))
                    runs(tf.paragraphs[0], st["value"], 36)
                    p = tf.add_paragraph()
                    p.text = st["label"]
                    p.font.size, p.font.color.rgb = Pt(14), grey
                top += Inches(1.4)
            if s["bullets"]:
                # PowerPoint does not report wrapped heights: estimate lines from ~0.5 em per character.
                per_line = max(20, int(left_w / Inches(1) * 72 / (16 * 0.5)))
                lines = sum(max(1, math.ceil((len(plain(b)) + 2) / per_line)) for b in s["bullets"])
                height = Inches(16 * 1.2 / 72) * lines + Inches(0.08) * len(s["bullets"])
                tf = box(Inches(0.5), top, left_w, height)
                for j, b in enumerate(s["bullets"]):
                    p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                    runs(p, [{"text": "• ", "kind": "text"}, *b], 16)
                top += height + Inches(0.2)
            if s["code"]:
                tf = box(Inches(0.5), top, left_w, Inches(0.4) * len(s["code"]))
                for j, c in enumerate(s["code"]):
                    p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
                    runs(p, [{"text": "$ " + c, "kind": "code"}], 14)
                top += Inches(0.4) * len(s["code"]) + Inches(0.2)
            if s["table"]:
                t = s["table"]
                rows, cols = len(t["rows"]) + 1, len(t["header"])
                shape = slide.shapes.add_table(rows, cols, Inches(0.5), top, left_w, Inches(0.38) * rows)
                for j, h in enumerate(t["header"]):
                    cell = shape.table.cell(0, j)
                    cell.text = h
                    cell.text_frame.paragraphs[0].font.size = Pt(13)
                for r, row in enumerate(t["rows"], 1):
                    for j, c in enumerate(row):
                        cell = shape.table.cell(r, j)
                        runs(cell.text_frame.paragraphs[0], c, 13, bold_numbers=False)
            if has_image:
                box_l, box_t, box_w, box_h = Inches(6.7), Inches(1.4), Inches(6.2), Inches(5.4)
                if s["image"]["exists"]:
                    from PIL import Image

                    with Image.open(s["image"]["path"]) as im:
                        w, h = im.size
                    scale = min(box_w / w, box_h / h)
                    pw, ph = int(w * scale), int(h * scale)
                    slide.shapes.add_picture(s["image"]["path"], box_l + (box_w - pw) // 2, box_t + (box_h - ph) // 2,
                                             Emu(pw), Emu(ph))
                else:
                    tf = box(box_l, box_t + box_h // 2, box_w, Inches(0.6))
                    runs(tf.paragraphs[0], [{"text": f"{s['image']['name']}: {NOT_MEASURED}", "kind": "text"}], 18,
                         grey)
            foot = ("source: " + ", ".join(s["sources"])) if s["sources"] else ""
            tf = box(Inches(0.5), prs.slide_height - Inches(0.45), W - Inches(2), Inches(0.35))
            runs(tf.paragraphs[0], [{"text": foot, "kind": "text"}], 9, grey)
        tf = box(W - Inches(1.3), prs.slide_height - Inches(0.45), Inches(0.9), Inches(0.35))
        runs(tf.paragraphs[0], [{"text": f"{i} / {n}", "kind": "text"}], 10, grey)
        slide.notes_slide.notes_text_frame.text = s["notes"] or s["title"]
    prs.save(pptx_path)


# --- everything --------------------------------------------------------------------------------------------------
