"""The ISC25 example's fine-tunes on one GPU, through the finetune stage as the workflow runs them: stock
`litgpt finetune_lora` against the fsdp2 engine's LoRA and DoRA at their defaults (engine.compile auto), each a
whole job (the stage's wall, and its phases: start-up, load, warm-up, work, save, exit).

    source bench/device_env.sh; PYTHONPATH=$PWD/src python3 bench/isc25_1gpu_finetune.py [--runs lora,lora-fast]
    python bench/isc25_1gpu_finetune.py --cpu-smoke      # the same path on CPU: two steps, fp32

config/examples/gpu-isc25.yaml with finetune.devices 1 (SmolLM2-135M's shape, random weights made here by the
weights stage's own writer, the embedded Alpaca records). A name given twice runs twice (the second finds the
page cache and torch's compile cache warm). Prints one line per job and a table last.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PHASES = ("startup", "load", "warmup", "work", "save", "exit")


def experiments(cpu_smoke: bool) -> dict:
    from llmhpc.config import check, load_schema

    cfg = yaml.safe_load((REPO / "config/examples/gpu-isc25.yaml").read_text())
    cfg["finetune"]["devices"] = 1
    if cpu_smoke:
        cfg["finetune"].update(precision="32-true", max_steps=2, lr_warmup_steps=1, micro_batch_size=2,
                              global_batch_size=4)
    return check(cfg, load_schema(REPO / "workflow/schemas/config.schema.yaml"))


def prepare(root: Path) -> Path:
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint

    from llmhpc.sources.embedded import shipped_dir
    from llmhpc.sources.tiny import write_tiny_model
    from llmhpc.stages.data import prepare_finetune

    ckpt = root / "ckpt"
    if not (ckpt / "lit_model.pth").is_file():
        write_tiny_model(ckpt, "SmolLM2-135M", 1024, 42, "bfloat16")
        convert_hf_checkpoint(ckpt, model_name="SmolLM2-135M")
    prepare_finetune({"source": "embedded"}, root / "data", shipped_dir(), log=lambda *a: None)
    return ckpt


def job(name: str, ft: dict, ckpt: Path, root: Path, k: int) -> dict:
    from llmhpc.stages import finetune
    from llmhpc.train import litgpt

    run = root / f"{k}-{name}"
    yaml_path = run.with_suffix(".yaml")
    litgpt.write_litgpt_config(yaml_path, ft, ckpt, root / "data", run / "out", experiment=name)
    s = finetune.run_stage(yaml_path, ckpt, run / "out", run.with_suffix(".stdout"), run.with_suffix(".csv"),
                           run.with_suffix(".json"), ft, None, 8, log=lambda *a: None)
    row = {"run": name, "engine": ft["engine"], "method": ft["method"], "wall": s["stage_wall_s"],
           "training": s["training_time_s"], "compile": s.get("compile_decision"), "attention": s.get("attention"),
           **{p: s.get(f"phase_{p}_s") for p in PHASES}}
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    cell = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    head = ["run", "engine", "wall", "training", *PHASES, "attention", "compile"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        compile_choice = (r["compile"] or "-").split(":")[0]  # eager / compile; the reason is in the line above
        lines.append("| " + " | ".join([*(cell(r[h]) for h in head[:-1]), compile_choice]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="lora,lora-fast,dora,lora,lora-fast")
    ap.add_argument("--cpu-smoke", action="store_true", help="two steps in fp32 on CPU: the code path only")
    ap.add_argument("--root", type=Path, default=Path("/tmp/bench-isc25-1gpu"))
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    exps = experiments(a.cpu_smoke)
    ckpt = prepare(a.root)
    rows = [job(name, exps[name]["finetune"], ckpt, a.root, k) for k, name in enumerate(a.runs.split(","))]
    print(table(rows))


if __name__ == "__main__":
    main()
