"""The interview slide deck: one slide model built from the measured summary, the environment manifest and the
config's `presentation` section, rendered as a self-contained HTML deck, a PDF and an editable PPTX.

No number on a slide is typed by hand. Every number is a `Figure`: it keeps the summary row (or manifest key, or
config key) it came from, the file that row names in its `source` column, and, for derived numbers (a difference,
a ratio), the figures it was computed from. Rich text is a list of segments, so that the renderers can show the
source of each number and a test can check that no digit on a slide comes from anywhere else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

NOT_MEASURED = "not measured yet"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SUMMARY_FILE = "results/summary.csv"
MANIFEST_FILE = "results/env/manifest.json"
DEFAULT_CONFIGFILE = "config/config.yaml"  # what the Snakefile loads where no --configfile is given

# How a number is shown, by the unit the summary table gives it: scale, decimals, suffix, signed.
FORMATS = {
    "s": (1, 1, " s", False),
    "tokens/s": (1, 0, " tokens/s", False),
    "items/s": (1, 1, " items/s", False),
    "samples/s": (1, 1, " samples/s", False),
    "requests/s": (1, 2, " requests/s", False),
    "tokens": (1, 0, " tokens", False),
    "GB": (1, 2, " GB", False),
    "fraction": (100, 1, "%", False),
    "pp": (100, 1, " pp", True),  # a change, in percentage points
    "pp_abs": (100, 1, " pp", False),
    "ratio": (1, 2, "×", False),
    "count": (1, 0, "", False),
    "samples": (1, 0, "", False),
    "nats": (1, 3, "", False),
    "TFLOP/s": (1, 1, " TFLOP/s", False),
    "SU": (1, 2, " SU", False),  # service units, as the site charges them (llmhpc.cluster.cost)
    "SU/h": (1, 2, " SU/h", False),
    "resources": (1, 2, "", False),  # resources charged per hour (CPUs, GPUs or nodes: the site's su_resource)
}
# Rates shown with one decimal from 10 up, two below it, so that two runs a few per cent apart read apart.
SMALL_RATES = ("samples/s", "items/s")


@dataclass
class Figure:
    """One number (or version string) shown on a slide, and where it came from."""

    id: int
    text: str  # as shown, unit included
    value: float | str | None
    kind: str  # summary | manifest | config | derived
    ref: dict  # summary: experiment/stage/metric; manifest/config: key; derived: op and args (figure ids)
    source: str  # the file(s) it came from, as the summary's source column names them
    label: str  # what it is, in words
    scale: float = 1
    decimals: int | None = None  # None: shown verbatim (text)


@dataclass
class Slide:
    key: str
    title: str
    layout: str = "split"  # title | split (text and image) | text
    bullets: list = field(default_factory=list)  # each a list of segments {"text", "kind", ["fig"]}
    stats: list = field(default_factory=list)  # big-number cards: {"label", "value": segments}
    table: dict | None = None  # {"header": [str], "rows": [[segments]]}
    code: list = field(default_factory=list)  # shell commands, shown verbatim
    image: dict | None = None  # {"name", "path", "exists"}
    notes: str = ""
    sources: list = field(default_factory=list)


def seg(text, kind="text", fig=None) -> dict:
    """kind: text (prose written here, no digits), num (a Figure), name (an identifier such as an experiment
    name), config (text from the config), code (a command)."""
    out = {"text": str(text), "kind": kind}
    if fig is not None:
        out["fig"] = fig
    return out


def plain(segments) -> str:
    return "".join(s["text"] for s in segments)


def format_value(value, unit: str) -> tuple[str, float, int | None]:
    if unit not in FORMATS or not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value), 1, None
    scale, decimals, suffix, signed = FORMATS[unit]
    if unit in SMALL_RATES and abs(value * scale) < 10:
        decimals += 1  # 0.885 and 0.903 samples/s are not both "0.9"
    shown = round(value * scale, decimals)
    number = f"{abs(shown):,.{decimals}f}"
    sign = ("+" if shown > 0 else "−" if shown < 0 else "±") if signed else ("−" if shown < 0 else "")
    return f"{sign}{number}{suffix}", scale, decimals


def _number(text):
    """A summary cell as a number where it is one."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)




def _segments(s) -> list[dict]:
    """Every text segment of a slide (dataclass or dict)."""
    s = asdict(s) if isinstance(s, Slide) else s
    out = [g for b in s["bullets"] for g in b]
    out += [g for st in s["stats"] for g in st["value"]]
    if s["table"]:
        out += [g for r in s["table"]["rows"] for c in r for g in c]
    return out


