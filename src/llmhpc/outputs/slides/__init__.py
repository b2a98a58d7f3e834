"""The interview deck: one slide model (figures, model, content) and its renderers (html, pdf, pptx)."""
