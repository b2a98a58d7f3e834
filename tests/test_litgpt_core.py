"""The processes that run a model (the fast scorer as the evaluate stage runs it, the server, the fsdp2 fine-tune
engine as the finetune stage starts it) import neither Lightning, torchmetrics nor transformers: each runs on a
tiny model on CPU in a fresh interpreter, and what it imported is read when its work is done (a lazy import during
the run counts). The engine's LitGPT is LitGPT's
own: the model built after litgpt_core.load() gives the same logits as the one `import litgpt` builds."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SCHEMA, default_config

pytestmark = [pytest.mark.litgpt, pytest.mark.subprocess]
HEAVY = ("lightning", "torchmetrics", "transformers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llmhpc.eval.tinyckpt import write_tiny_litgpt
    from llmhpc.sources import embedded

    root = tmp_path_factory.mktemp("startup")
    ckpt = write_tiny_litgpt(root / "ckpt", n_layer=2, add_bos=True)
    items = root / "items.jsonl"
    items.write_text("".join(json.dumps(d) + "\n" for d in embedded.eval_records()[:12]))
    return root, ckpt, items


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter; it ends by printing json of what it reports."""
    tail = f"\nimport json, sys\nprint(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], **report}}))"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + tail], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_evaluate_stages_fast_scorer_imports_no_lightning(tiny):
    root, ckpt, items = tiny
    got = run_python(f"""
        from pathlib import Path
        from llmhpc.stages import evaluate
        out = Path({str(root)!r}) / "eval"
        m = evaluate.run_stage({{"scorer": "fast", "device": "cpu", "precision": "32-true"}}, Path({str(ckpt)!r}),
                               Path({str(items)!r}), out / "predictions.jsonl", out / "metrics.json")
        import sys
        report = {{"items": m["items"], "dynamo": "torch._dynamo" in sys.modules}}
    """)
    # nor Dynamo, where the job runs eager (its import is 1.5-4 s; a meta-device build would pull it in)
    assert got == {"heavy": [], "items": 12, "dynamo": False}


def test_the_server_imports_no_lightning(tiny):
    _, ckpt, _ = tiny
    got = run_python(f"""
        import asyncio, httpx
        from llmhpc.serve import cli
        from llmhpc import litgpt_core
        litgpt_core.load()  # as cli.main does before it builds the engine
        from llmhpc.serve.app import create_app
        engine = cli.build_engine({str(ckpt)!r}, "cpu", max_batch=2)
        engine.start()

        async def ask():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine)),
                                         base_url="http://serve") as c:
                return (await c.post("/process", json={{"prompt": "The cat", "max_new_tokens": 4}})).status_code
        import sys
        report = {{"status": asyncio.run(ask()), "dynamo": "torch._dynamo" in sys.modules}}
        engine.stop()
    """)
    assert got == {"heavy": [], "status": 200, "dynamo": False}


def test_the_finetune_stages_fsdp2_engine_imports_no_lightning(tiny):
    """The YAML the finetune rule writes, run with the stage's command line (its module as __main__)."""
    from llmhpc.config import check, load_schema
    from llmhpc.sources.embedded import shipped_dir
    from llmhpc.stages.data import prepare_finetune
    from llmhpc.train import litgpt
    from llmhpc.train.registry import ENGINES

    root, ckpt, _ = tiny
    cfg = default_config()
    cfg["experiments"] = [{"name": "fast", "finetune": {
        "engine": "fsdp2", "max_steps": 2, "lr_warmup_steps": 1, "global_batch_size": 4, "micro_batch_size": 2,
        "max_seq_length": 64, "final_validation": True}}]
    ft = check(cfg, load_schema(SCHEMA))["fast"]["finetune"]
    prepare_finetune({"source": "embedded"}, root / "data", shipped_dir(), log=lambda *a: None)
    yaml_path, out = root / "litgpt.yaml", root / "out"
    litgpt.write_litgpt_config(yaml_path, ft, ckpt, root / "data", out, experiment="fast")
    cmd = ENGINES[ft["engine"]].command(ft["method"], yaml_path)
    assert cmd[1:3] == ["-m", "llmhpc.train.fsdp2"]
    got = run_python(f"""
        import contextlib, io, runpy, sys
        sys.argv = ["llmhpc.train.fsdp2", *{cmd[3:]!r}]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            runpy.run_module("llmhpc.train.fsdp2", run_name="__main__", alter_sys=True)
        report = {{"validated": "Final evaluation | val loss" in printed.getvalue()}}
    """)
    assert got == {"heavy": [], "validated": True}  # the whole run, its final validation included
    assert (out / "final/lit_model.pth").is_file() and (out / "final/hyperparameters.yaml").is_file()


def test_litgpt_core_builds_litgpts_own_model_and_leaves_the_rest_loadable(tiny):
    _, ckpt, _ = tiny
    got = run_python(f"""
        import torch
        from llmhpc import litgpt_core
        litgpt_core.load()
        from llmhpc.litgpt_checkpoint import load_litgpt
        model, tok = load_litgpt({str(ckpt)!r}, "32-true", "cpu")
        ids = tok.encode("The cat sat on the mat", bos=True)[None]
        core = model(ids)
        before = litgpt_core.heavy_modules()
        from litgpt import LLM  # a name of litgpt/__init__.py: the rest of the package loads now
        import litgpt.utils
        from litgpt.finetune.full import get_lr_scheduler
        report = {{"before": before, "deferred_is_real": litgpt.utils.fix_and_load_json.__module__,
                   "core_logits": core[0, -1, :4].tolist(), "llm_loaded": LLM.__name__ == "LLM"}}
    """)
    assert got["before"] == []
    assert set(got["heavy"]) == {"lightning", "torchmetrics", "transformers"}  # loaded when asked for, not before
    assert got["deferred_is_real"] == "litgpt.utils" and got["llm_loaded"]
    full = run_python(f"""
        import litgpt  # the whole package the usual way
        from llmhpc.litgpt_checkpoint import load_litgpt
        model, tok = load_litgpt({str(ckpt)!r}, "32-true", "cpu")
        report = {{"core_logits": model(tok.encode("The cat sat on the mat", bos=True)[None])[0, -1, :4].tolist()}}
    """)
    assert full["core_logits"] == got["core_logits"]


@pytest.mark.unit
def test_meta_gpt_is_litgpts_model_on_meta_and_puts_torch_and_litgpt_back():
    import torch

    from llmhpc import litgpt_core

    litgpt_core.load()
    from litgpt import GPT, Config

    config = Config.from_name("pythia-14m")
    init_before = torch.nn.init.normal_
    got = litgpt_core.meta_gpt(config)
    with torch.device("meta"):
        want = GPT(config)
    assert {k: (v.shape, v.dtype) for k, v in got.state_dict().items()} == \
        {k: (v.shape, v.dtype) for k, v in want.state_dict().items()}
    assert all(p.is_meta for p in got.parameters())
    assert torch.nn.init.normal_ is init_before and GPT.rope_cache is not litgpt_core._empty_rope
    cos, _ = got.rope_cache(device=torch.device("cpu"))  # the caller's own RoPE cache, LitGPT's
    assert torch.equal(cos, want.rope_cache(device=torch.device("cpu"))[0])


def test_config_class_alone_imports_no_torch_and_load_still_completes_the_core():
    """The weights stage reads architectures only; a later load() in the same process still gives the model."""
    got = run_python("""
        import sys
        from llmhpc import litgpt_core
        Config = litgpt_core.config_class()
        torch_after_config = "torch" in sys.modules
        litgpt_core.load()
        from litgpt import GPT, Config as Again
        report = {"torch_after_config": torch_after_config, "same": Again is Config,
                  "n_layer": GPT(Config.from_name("pythia-14m")).config.n_layer}
    """)
    assert got == {"heavy": [], "torch_after_config": False, "same": True, "n_layer": 6}
