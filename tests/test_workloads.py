"""The seed workloads as presets (config/workloads/): each is a complete run description that passes the checks,
produces config_hub's LitGPT settings with the competition's own numbers, and dry-runs under every cluster profile."""

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SCHEMA, snakemake
from llmhpc.cluster import preflight
from llmhpc.config import ConfigError, check, load_schema
from llmhpc.train.litgpt import litgpt_config

WORKLOADS = sorted((REPO / "config/workloads").glob("*.yaml"))
PROFILES = ("gadi", "aspire2a", "slurm")

# Values read off litgpt's config_hub (finetune/llama-2-7b/full.yaml, llama-2-7b/lora.yaml, llama-3.1-8b/lora.yaml)
# and the seed documents (max_seq_length 512 and 1 epoch for APAC; batch 16 x 8 x 2 and 69 steps for ISC25).
EXPECTED = {
    "apac2024-llama2-7b-full": {
        ("train", "global_batch_size"): 64, ("train", "micro_batch_size"): 4, ("train", "lr_warmup_steps"): 25,
        ("train", "epochs"): 1, ("train", "max_seq_length"): 512, ("train", "min_lr"): 6.0e-05,
        ("optimizer", "init_args", "lr"): 0.0002, ("optimizer", "init_args", "weight_decay"): 0.0,
        ("optimizer", "init_args", "betas"): [0.9, 0.95], ("seed",): 1337, ("devices",): 4, ("num_nodes",): 2,
        ("data", "init_args", "prompt_style"): "alpaca", ("data", "init_args", "mask_prompt"): False,
        ("eval", "final_validation"): False,
    },
    "isc25-llama31-8b-lora": {
        ("train", "global_batch_size"): 256, ("train", "micro_batch_size"): 16, ("train", "max_steps"): 69,
        ("train", "epochs"): 5, ("train", "max_seq_length"): 512, ("train", "lr_warmup_steps"): 10,
        ("optimizer", "init_args", "lr"): 0.0002, ("lora_r",): 32, ("lora_alpha",): 16, ("lora_dropout",): 0.05,
        ("lora_query",): True, ("lora_key",): False, ("lora_value",): True, ("lora_mlp",): False,
        ("devices",): 8, ("precision",): "bf16-true",
    },
    "neurips2023-1gpu": {
        ("train", "global_batch_size"): 8, ("train", "micro_batch_size"): 2, ("train", "epochs"): 1,
        ("train", "lr_warmup_steps"): 10, ("optimizer", "init_args", "lr"): 0.0002, ("lora_r",): 32,
        ("lora_alpha",): 16, ("devices",): 1,
    },
}
# Precision chosen from the site, not by hand: APAC on Gadi's V100 and on Aspire 2A's A100.
SITE_PRECISION = {"gadi": ("16-mixed", "16-true"), "aspire2a": ("bf16-true", "bf16-true")}


def preset(name: str, site: dict | None = None) -> tuple[dict, dict]:
    cfg = yaml.safe_load((REPO / f"config/workloads/{name}.yaml").read_text())
    if site:
        cfg["site"] = {**cfg.get("site", {}), **site}
    return cfg, check(cfg, load_schema(SCHEMA))


def dig(d: dict, path: tuple):
    for key in path:
        d = d[key]
    return d


def test_every_seed_workload_has_a_preset():
    assert {p.stem for p in WORKLOADS} == {"apac2024-llama2-7b-full", "samsung2023-llama30b-hellaswag",
                                          "isc25-llama31-8b-lora", "neurips2023-1gpu"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_litgpt_yaml_has_config_hubs_and_the_competitions_numbers(name):
    cfg, experiments = preset(name, {"gpu_model": "H100", "scheduler": "slurm", "gpus_per_node": 8})
    first = next(iter(experiments.values()))
    out = litgpt_config(first["finetune"], "ckpt", "data", "out")
    wrong = {path: (dig(out, path), want) for path, want in EXPECTED[name].items() if dig(out, path) != want}
    assert not wrong, wrong
    assert cfg["model"]["revision"] and len(cfg["model"]["revision"]) == 40  # a pinned commit, not a branch


@pytest.mark.parametrize("profile", sorted(SITE_PRECISION))
def test_apac_precision_follows_the_sites_gpus(profile):
    site = yaml.safe_load((REPO / f"profiles/{profile}/site.yaml").read_text())
    cfg, experiments = preset("apac2024-llama2-7b-full", site)
    train, score = SITE_PRECISION[profile]
    assert {e["finetune"]["precision"] for e in experiments.values()} == {train}
    assert cfg["evaluate"]["precision"] == score


def test_samsung_preset_only_evaluates():
    cfg, experiments = preset("samsung2023-llama30b-hellaswag", {"gpu_model": "V100"})
    assert experiments == {}
    assert (cfg["evaluate"]["scorer"], cfg["evaluate"]["gpus"], cfg["evaluate"]["pipeline_stages"]) == ("fast", 4, 4)
    assert cfg["evaluate"]["precision"] == "16-true"  # fp16 on V100, no quantization
    assert cfg["model"]["repo_id"] == "huggyllama/llama-30b"


def test_the_embedded_default_is_not_inherited_by_a_preset():
    cfg, _ = preset("apac2024-llama2-7b-full")
    assert cfg["run_name"] == "apac2024-llama2-7b-full"
    assert cfg["env"]["requirements"] == "envs/cuda.txt"
    assert "Embedded default" not in cfg["presentation"]["team"]


# Profiles whose GPUs have FP8 tensor cores (or are said to: the generic Slurm site is told it has the seed's H100).
HOPPER_PROFILES = {"slurm"}


def four_gpu_nodes(repo: Path, name: str, profile: str = "slurm", float8: bool = True) -> list[str]:
    """Config files for a dry run of preset `name`: a project code for the PBS sites and, for the 8-GPU ISC25
    workload, the same effective batch on nodes of 4 GPUs (2 x 4), on the seed's H100 where the profile leaves its
    GPU unnamed; `float8` False leaves out the FP8 experiment, which a V100 or A100 site refuses."""
    extra = {"site": {"project": "ab12"}}
    if profile == "slurm":  # the generic Slurm site leaves its nodes' shape and account to the user
        extra["site"].update(cpus_per_node=64, mem_per_node_gb=500, account="ab12", partition="gpu")
    if name.startswith("isc25"):
        extra["finetune"] = {"devices": 4, "num_nodes": 2}
        experiments = yaml.safe_load((REPO / f"config/workloads/{name}.yaml").read_text())["experiments"]
        extra["experiments"] = [e for e in experiments if float8 or not (e.get("finetune") or {}).get("float8")]
        if profile in HOPPER_PROFILES:
            extra["site"]["gpu_model"] = "H100"
    (repo / "extra.yaml").write_text(yaml.safe_dump(extra))
    return ["--configfile", f"config/workloads/{name}.yaml", "extra.yaml"]


@pytest.mark.snakemake
@pytest.mark.parametrize("name", [p.stem for p in WORKLOADS])
def test_preset_dry_runs_under_every_profile(name, repo_copy):
    for profile in PROFILES:
        files = four_gpu_nodes(repo_copy, name, profile, float8=profile in HOPPER_PROFILES)
        proc = snakemake(repo_copy, "--profile", f"profiles/{profile}", "-n", *files)
        out = proc.stdout + proc.stderr
        assert "submissions of this dry run" in out, out[-3000:]
        lines = [ln for ln in out.splitlines() if "qsub" in ln or "sbatch" in ln]
        assert any("evaluate" in ln for ln in lines), lines
        if name.startswith("samsung") and profile == "slurm":  # LLaMA-30B split over the node's 4 GPUs
            assert all("--gres=gpu:4" in ln for ln in lines if "evaluate" in ln), lines
            # the whole node's cores and memory, not the 8 GB a flat profile value gave while its convert got 94 GB
            assert all("--mem 500000" in ln and "--cpus-per-task=64" in ln for ln in lines if "evaluate" in ln), lines
        if profile == "slurm":  # the site's account and partition on every job
            assert all("-A ab12 -p gpu" in ln for ln in lines), lines
        if not name.startswith("samsung"):
            finetune = [ln for ln in lines if "finetune" in ln]
            assert finetune, lines
            nodes = 2 if name.startswith(("apac", "isc25")) else 1
            if profile == "slurm":
                assert all(f"--nodes={nodes}" in ln for ln in finetune), finetune
                if nodes == 2:  # a 7B or 8B model on 2 x 4 GPUs: each node's memory, 16 cores per GPU task
                    assert all("--mem 500000" in ln and "--cpus-per-task=16" in ln for ln in finetune), finetune
            elif profile == "aspire2a":
                assert all(f"select={nodes}:" in ln for ln in finetune), finetune
            elif nodes == 2:
                assert all("ngpus=8" in ln for ln in finetune), finetune
            if name.startswith("isc25"):  # every experiment of the LoRA family is a job, FP8 only on the Hopper site
                ran = {re.search(r"experiment=([\w-]+)|-N finetune\.([\w-]+)", ln).group(1, 2) for ln in finetune}
                ran = {a or b for a, b in ran}  # sbatch lines name the wildcard, qsub lines the job
                expected = {"lora", "lora-fast", "dora", "qlora"} | ({"dora-fp8"} if profile in HOPPER_PROFILES else set())
                assert ran == expected, finetune


def test_isc25_runs_the_lora_family_beside_stock_lora():
    _, experiments = preset("isc25-llama31-8b-lora", {"gpu_model": "H100", "scheduler": "slurm", "gpus_per_node": 8})
    ft = {name: e["finetune"] for name, e in experiments.items()}
    assert {n: (f["engine"], f["method"], f["float8"]) for n, f in ft.items()} == {
        "lora": ("litgpt", "lora", False), "lora-fast": ("fsdp2", "lora", False), "dora": ("fsdp2", "dora", False),
        "qlora": ("fsdp2", "qlora", False), "dora-fp8": ("fsdp2", "dora", True)}
    for name, f in ft.items():  # the seed's batch and config_hub's adapters in every experiment
        out = litgpt_config(f, "ckpt", "data", "out")
        assert (out["train"]["global_batch_size"], out["train"]["micro_batch_size"], out["lora_r"]) == (256, 16, 32)
        if f["engine"] == "fsdp2":
            assert (out["engine"]["method"], out["engine"]["float8"]) == (f["method"], f["float8"])
        assert experiments[name]["notes"]
    assert all("seed" in experiments[n]["notes"] for n in ("lora", "dora", "qlora", "dora-fp8"))  # cites seed 003


@pytest.mark.parametrize(("profile", "gpu"), [("gadi", "V100"), ("aspire2a", "A100")])
def test_isc25_fp8_is_refused_on_sites_without_fp8_tensor_cores(profile, gpu):
    site = yaml.safe_load((REPO / f"profiles/{profile}/site.yaml").read_text())
    cfg, experiments = preset("isc25-llama31-8b-lora", {**site, "project": "ab12", "gpus_per_node": 8})
    with pytest.raises(ConfigError) as err:
        preflight.preflight(cfg, experiments, "/scratch/ab12/run")
    assert "experiment 'dora-fp8': finetune.float8 true needs FP8 tensor cores" in str(err.value)
    assert f"the {gpu} of site '{profile}'" in str(err.value)


@pytest.mark.snakemake
def test_isc25_dry_run_refuses_fp8_on_gadi_before_any_job(repo_copy):
    proc = snakemake(repo_copy, "--profile", "profiles/gadi", "-n", *four_gpu_nodes(repo_copy, "isc25-llama31-8b-lora",
                                                                                     "gadi"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "experiment 'dora-fp8': finetune.float8 true needs FP8 tensor cores" in out, out[-3000:]
    assert "qsub" not in out


def test_apac_waterfall_adds_one_engine_switch_at_a_time():
    _, experiments = preset("apac2024-llama2-7b-full", {"gpu_model": "A100", "scheduler": "pbs", "gpus_per_node": 4})
    ft = {name: e["finetune"] for name, e in experiments.items()}
    assert [name for name in ft] == ["baseline", "fsdp2-eager", "fsdp2-packed", "fsdp2", "mbs8"]
    assert ft["baseline"]["engine"] == "litgpt" and ft["mbs8"]["engine"] == "litgpt"
    switches = [(ft[n]["engine_options"]["packing"], ft[n]["engine_options"]["compile"])
                for n in ("fsdp2-eager", "fsdp2-packed", "fsdp2")]
    assert switches == [(False, False), (True, False), (True, True)]
    yaml_of = litgpt_config(ft["fsdp2-packed"], "ckpt", "data", "out")
    assert yaml_of["engine"]["packing"] is True and yaml_of["train"]["global_batch_size"] == 64
