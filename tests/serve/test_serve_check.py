"""The serve_check stage on a tiny checkpoint: a real server process on loopback, checked, load-tested, stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmhpc.stages import serve_check

pytestmark = [pytest.mark.subprocess, pytest.mark.litgpt]
EVAL = Path(__file__).resolve().parents[2] / "src/llmhpc/embedded/hellaswag.jsonl"


def settings(**over):
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["serve"]["properties"]
    return {**{k: v["default"] for k, v in props.items()}, "device": "cpu", "threads": 1, "load_requests": 12,
            "load_new_tokens": 8, "startup_timeout_s": 120, **over}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from llmhpc.eval.tinyckpt import write_tiny_litgpt

    return write_tiny_litgpt(tmp_path_factory.mktemp("ckpt") / "final", family="llama", add_bos=False)


def test_serve_check_records_latency_and_throughput_and_stops_the_server(checkpoint, tmp_path):
    metrics = serve_check.run(checkpoint, EVAL, settings(), tmp_path / "serve/metrics.json", tmp_path / "server.log")
    on_disk = json.loads((tmp_path / "serve/metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert metrics["greedy_matches"] == metrics["greedy_checked"] == 4
    assert metrics["completed"] == 12 and metrics["errors"] == 0 and not metrics["time_limited"]
    assert 0 < metrics["p50_latency_s"] <= metrics["p99_latency_s"]
    assert metrics["requests_per_s"] > 0 and metrics["tokens_per_s"] > 0 and metrics["load_consistent"]
    assert metrics["peak_batch"] >= 2  # HELM's 4 client threads were batched
    port = metrics["base_url"].rsplit(":", 1)[1]
    assert not _listening(int(port)), "the server is still up"


def test_a_server_that_cannot_start_fails_the_stage_with_its_reason(checkpoint, tmp_path):
    import socket

    with socket.socket() as taken:  # the port is in use: the server exits, the stage says so and writes nothing
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited"):
            serve_check.run(checkpoint, EVAL, settings(check_port=port), tmp_path / "m.json", tmp_path / "server.log")
    assert "address already in use" in (tmp_path / "server.log").read_text().lower()
    assert not (tmp_path / "m.json").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(serve_check.CheckFailed, match="not a LitGPT checkpoint"):
        serve_check.run(tmp_path / "empty", EVAL, settings(), tmp_path / "m.json", tmp_path / "server.log")


def test_the_summary_carries_the_serving_figures(tmp_path):
    """summary.build on a recorded run (tests/data/run) plus a serve_check metrics file: stage `serve` rows."""
    from llmhpc.sources import embedded
    from llmhpc.stages.summary import SERVE_METRICS, build

    run = Path(__file__).resolve().parents[1] / "data/run"
    train, val = embedded.finetune_records()
    (tmp_path / "train.json").write_text(json.dumps(train))
    (tmp_path / "val.json").write_text(json.dumps(val))
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({m: 1.5 for m in SERVE_METRICS}))
    exps = ["baseline", "mbs16"]
    table = build("run", exps, run / "env/manifest.json", {e: run / f"finetune/{e}/summary.json" for e in exps},
                  {m: run / f"evaluate/{m}/metrics.json" for m in ["base", *exps]},
                  {"train": tmp_path / "train.json", "val": tmp_path / "val.json", "eval": EVAL}, serve={"mbs16": path})
    rows = table[table.stage == "serve"]
    assert set(rows.metric) == set(SERVE_METRICS) and set(rows.experiment) == {"mbs16"}
    assert set(rows.source) == {str(path)} and (rows.value == 1.5).all()
    assert table[table.stage != "serve"].reset_index(drop=True).equals(build("run", exps, run / "env/manifest.json",
                                                      {e: run / f"finetune/{e}/summary.json" for e in exps},
                                                      {m: run / f"evaluate/{m}/metrics.json" for m in ["base", *exps]},
                                                      {"train": tmp_path / "train.json", "val": tmp_path / "val.json",
                                                       "eval": EVAL}))


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
