"""The serving benchmark's tiny CPU mode: both servers started, asked the same greedy requests, the same text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.subprocess, pytest.mark.litgpt]
REPO = Path(__file__).resolve().parents[2]


def test_tiny_benchmark_gives_the_same_greedy_text_on_both_servers(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench/serve_vs_litgpt.py"), "--tiny", "--clients", "1,2",
                           "--requests", "3", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "out/serve_vs_litgpt.json").read_text())
    assert [r["clients"] for r in result["llmhpc"]] == [r["clients"] for r in result["litgpt"]] == [1, 2]
    assert [r["same_text"] for r in result["llmhpc"]] == ["3/3", "3/3"]
    assert all(r["requests_per_s"] > 0 and r["p50_latency_s"] > 0 for r in result["llmhpc"] + result["litgpt"])
    assert "| 2 | llmhpc-serve |" in (tmp_path / "out/serve_vs_litgpt.md").read_text()
