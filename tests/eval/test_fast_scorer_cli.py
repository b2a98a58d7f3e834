"""The fast scorer's program (python -m llmhpc.eval.run) on a tiny LitGPT checkpoint on CPU: the reference
scorer's predictions, evaluate()'s metric keys, resuming from part files, and 2 processes (torchrun, gloo) as
2 data-parallel ranks and as 2 pipeline stages giving the predictions of 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.litgpt]
N_ITEMS = 36


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from llmhpc.eval.tinyckpt import write_tiny_litgpt
    from llmhpc.sources import embedded

    root = tmp_path_factory.mktemp("fast_cli")
    ckpt = write_tiny_litgpt(root / "ckpt", n_layer=3, add_bos=True)
    eval_file = root / "items.jsonl"
    eval_file.write_text("".join(json.dumps(d) + "\n" for d in embedded.eval_records()[:N_ITEMS]))
    return ckpt, eval_file


def args(ckpt, eval_file, out, *extra) -> list[str]:
    return ["--checkpoint", str(ckpt), "--eval-file", str(eval_file), "--predictions", str(out / "p.jsonl"),
            "--metrics", str(out / "m.json"), "--device", "cpu", "--token-budget", "700", "--quiet", *extra]


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "p.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    from llmhpc.eval.run import main

    out = tmp_path_factory.mktemp("single")
    assert main(args(*setup, out)) == 0
    return out


def test_matches_reference_and_writes_evaluate_metrics(setup, single):
    from llmhpc.eval.hellaswag import read_hellaswag
    from llmhpc.eval.reference import score_items
    from llmhpc.litgpt_checkpoint import load_litgpt

    ckpt, eval_file = setup
    model, tok = load_litgpt(ckpt, "32-true", "cpu")
    ref = score_items(model, lambda s: tok.encode(s, bos=False).tolist(), read_hellaswag(eval_file), 8,
                      tok.bos_id, "cpu")
    fast = rows(single)
    assert [r["index"] for r in fast] == list(range(N_ITEMS))
    for r, f in zip(ref, fast):
        assert (r["pred"], r["pred_norm"], r["acc"], r["acc_norm"]) == (f["pred"], f["pred_norm"], f["acc"],
                                                                        f["acc_norm"])
        assert max(abs(a - b) for a, b in zip(r["loglikelihoods"], f["loglikelihoods"])) <= 1e-4
    m = json.loads((single / "m.json").read_text())
    for key in ("checkpoint", "eval_file", "items", "acc", "acc_norm", "load_s", "score_s", "wall_s",
                "items_per_s", "bos_prepended", "precision", "device", "batch_size"):
        assert key in m, key
    assert m["scorer"] == "fast" and m["bos_prepended"] is True and m["bos"]["id"] == tok.bos_id
    assert m["items"] == N_ITEMS and m["acc"] == sum(r["acc"] for r in ref) / N_ITEMS
    assert {"load_s", "tokenize_s", "score_s"} <= set(m["phases_s"])
    assert not list(single.glob("p.jsonl.part*"))


def test_resumes_after_a_kill(setup, single, tmp_path):
    """Part files as a killed run leaves them (some items, a cut line): the next run scores only the rest
    (in chunks of 4, 8, 16 items, its blocks compiled in a thread meanwhile: the same answers as one chunk,
    eager)."""
    import torch

    from llmhpc.eval import run, store

    out = tmp_path
    argv = args(*setup, out, "--reference-metrics", str(single / "m.json"), "--first-chunk", "4",
                "--compile", "aot_eager", "--wait-for-compile")
    a = run.parse_args(argv)
    store.read_parts(a.predictions, run.fingerprint(a, "32-true", N_ITEMS))  # what a started run writes first
    done = rows(single)[:: 3]
    with open(store.part_path(a.predictions, 0), "w") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in done) + '{"index": 5, "qu')
    torch._dynamo.reset()  # a test before this one in the same process may have compiled this model's blocks
    assert run.main(argv) == 0
    m = json.loads((out / "m.json").read_text())
    assert m["resumed_items"] == len(done) and m["accuracy_guard"]["ok"]
    # compiled in a thread while loading, every batch waiting for it: the one warm-up graph, reused
    assert m["compile"]["backend"] == "aot_eager" and m["compile"]["graphs"] == 1, m["compile"]
    assert m["compile"]["eager_batches"] == 0 and m["compile"]["warm_up_s"] > 0
    assert [(r["index"], r["pred"], r["pred_norm"]) for r in rows(out)] == \
        [(r["index"], r["pred"], r["pred_norm"]) for r in rows(single)]


WORKER = textwrap.dedent("""
    import sys
    from llmhpc.eval.run import main
    common, out = sys.argv[1:-1], sys.argv[-1]
    assert main(common + ["--predictions", out + "/p.jsonl", "--metrics", out + "/m.json"]) == 0
""")


def torchrun(worker: Path, args: list[str], timeout: int = 240) -> None:
    """Two CPU ranks (gloo) in a session of their own, killed whole if they outlive the timeout (a hung rank
    must not outlive its test)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(worker), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"torchrun {args[-1]} did not finish in {timeout} s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, out[-3000:]


@pytest.mark.distributed
def test_two_ranks_and_two_stages_match_one(setup, single, tmp_path):
    ckpt, eval_file = setup
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out_dp, out_pp = tmp_path / "dp", tmp_path / "pp"
    common = ["--checkpoint", str(ckpt), "--eval-file", str(eval_file), "--device", "cpu", "--token-budget",
              "700", "--quiet", "--first-chunk", "4"]  # several chunks (4, 8, 16, ...) per rank
    # each layout in processes of its own, as the workflow's scoring jobs run
    torchrun(worker, common + [str(out_dp)])
    torchrun(worker, common + ["--pipeline-stages", "2", str(out_pp)])
    one = rows(single)
    for out, layout in ((out_dp, (2, 2, 1)), (out_pp, (2, 1, 2))):
        m = json.loads((out / "m.json").read_text())
        assert (m["world_size"], m["data_parallel"], m["pipeline_stages"]) == layout
        got = rows(out)
        assert [(r["index"], r["pred"], r["pred_norm"]) for r in got] == \
            [(r["index"], r["pred"], r["pred_norm"]) for r in one]
        assert max(abs(a - b) for r, s in zip(got, one) for a, b in zip(r["loglikelihoods"], s["loglikelihoods"])) \
            <= 1e-4


@pytest.mark.distributed
def test_mpirun_over_two_nodes_on_one_host_matches_one_process(setup, single, tmp_path):
    """evaluate.num_nodes 2 with the mpirun launcher as the workflow plans it (site.nodes_on_one_host): the ranks
    find each other through mpi4py (Lightning's MPI environment), score their shares, and exit cleanly."""
    from llmhpc.cluster import launch

    ckpt, eval_file = setup
    site = {"name": "one-host", "launcher": "mpirun", "mpirun_args": ["--bind-to", "none", "--oversubscribe"],
            "nodes_on_one_host": True, "env": {}}
    plan = launch.plan(site, {"num_nodes": 2, "devices": 1}, {}, tmpdir=str(tmp_path), what="evaluate")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")  # CI runs as root
    out = tmp_path / "mpi"
    out.mkdir()
    proc = subprocess.run([*plan["prefix"], sys.executable, "-m", "llmhpc.eval.run", *args(ckpt, eval_file, out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    m = json.loads((out / "m.json").read_text())
    assert (m["world_size"], m["data_parallel"]) == (2, 2)
    assert [(r["index"], r["pred"], r["pred_norm"]) for r in rows(out)] == \
        [(r["index"], r["pred"], r["pred_norm"]) for r in rows(single)]


def test_returns_with_no_compile_warm_up_still_running(setup, tmp_path, monkeypatch):
    """A scoring that ends before the compile warm-up does waits for it: a thread left inside Dynamo, Inductor or
    CUDA while the interpreter tears down the evaluate job's process killed it with SIGSEGV after its results
    were written."""
    import threading
    import time

    from llmhpc.eval import run, warm

    def slow_warm_up(*a, **k):
        time.sleep(3)
        return 3.0

    monkeypatch.setattr(warm, "warm_up", slow_warm_up)
    assert run.main(args(*setup, tmp_path, "--compile", "aot_eager", "--limit", "4")) == 0
    assert not [t for t in threading.enumerate() if t.name == "compile-warm-up"]
    assert json.loads((tmp_path / "m.json").read_text())["compile"]["decision"] == "compile aot_eager"
