"""Preflight: what cannot run on the site is refused before anything is queued."""

import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from conftest import SCHEMA, default_config
from llmhpc.cluster import preflight
from llmhpc.config import ConfigError, check, load_schema
from pbs_helpers import ASPIRE, GADI, site_of

# -------------------------------------------------------------------------------------------------- preflight

DiskUsage = namedtuple("DiskUsage", "total used free")


@pytest.fixture(autouse=True)
def ample_disk(monkeypatch):
    """A 7B run writes about 42 GB: whether this host's disk has that free is not what these tests ask (CI's had
    35.9 GB). The disk test below sets its own figures."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10e12, 1e12, 9e12))

def experiments_for(**finetune) -> tuple[dict, dict]:
    cfg = default_config()
    cfg["finetune"].update(finetune)
    cfg["experiments"] = [{"name": "baseline"}]
    return cfg, check(cfg, load_schema(SCHEMA))


def refusal(cfg, experiments, site, workdir="/home/user/run", overrides=None) -> str:
    cfg["site"] = site
    with pytest.raises(ConfigError) as err:
        preflight.preflight(cfg, experiments, workdir, overrides)
    return str(err.value)



def test_preflight_passes_the_seed_workload_on_both_sites():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=256,
                                micro_batch_size=32)
    for site in (GADI, ASPIRE):
        cfg["site"] = site
        preflight.preflight(cfg, exps, "/scratch/ab12/run")


def test_preflight_refuses_bf16_on_v100():
    cfg, exps = experiments_for(precision="bf16-true")
    assert "finetune.precision bf16-true on V100, which has no bf16 tensor cores: use 16-mixed" in \
        refusal(cfg, exps, GADI)
    cfg["site"] = ASPIRE
    preflight.preflight(cfg, exps, "/home/user/run")  # A100 has bf16


def test_preflight_refuses_more_devices_than_a_node_has():
    cfg, exps = experiments_for(devices=8, global_batch_size=64, micro_batch_size=4)
    assert "finetune.devices 8 per node, but a gadi node has 4 GPUs: set devices to 4 or less and raise num_nodes" \
        in refusal(cfg, exps, GADI)


def test_batch_arithmetic_for_the_total_gpu_count_is_refused_before_preflight():
    # the organisers' settings: global 128 over 2 x 4 GPUs leaves 16 per rank, below micro batch 32; the config
    # check (which runs before preflight, on every site) refuses it, so preflight need not check it again
    with pytest.raises(ConfigError) as err:
        experiments_for(devices=4, num_nodes=2, global_batch_size=128, micro_batch_size=32)
    assert "= 8 ranks gives 16 sample(s) per rank, fewer than micro_batch_size 32" in str(err.value)


def test_preflight_refuses_a_missing_project():
    cfg, exps = experiments_for()
    assert "site 'gadi' (PBS) has no project code: set site.project in the profile's site.yaml" in \
        refusal(cfg, exps, {**GADI, "project": None})


def test_preflight_refuses_gadi_paths_outside_the_storage_list(tmp_path):
    cfg, exps = experiments_for()
    cfg["model"]["path"] = "/g/data/xy12/models/llama-2-7b"
    text = refusal(cfg, exps, GADI, workdir="/scratch/zz99/me/run")
    assert "model.path /g/data/xy12/models/llama-2-7b is on gdata/xy12, which the jobs would not mount" in text
    assert "working directory /scratch/zz99/me/run is on scratch/zz99" in text
    assert "add 'gdata/xy12' to site.storage" in text
    cfg["site"] = {**GADI, "storage": ["gdata/ab12", "scratch/ab12", "gdata/xy12", "scratch/zz99"]}
    preflight.preflight(cfg, exps, "/scratch/zz99/me/run")


def test_preflight_refuses_multi_node_without_a_multi_node_launcher():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=64)
    assert "finetune.num_nodes 2 with site.launcher 'local'" in refusal(cfg, exps, {**GADI, "launcher": "local"})


def test_preflight_refuses_resources_that_disagree_with_litgpt():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=64)
    text = refusal(cfg, exps, GADI, workdir="/scratch/ab12/run", overrides={"nodes": 1})
    assert "--set-resources finetune:nodes=1 disagrees with finetune devices 4 x num_nodes 2 (expected 2)" in text


def test_preflight_has_nothing_to_say_locally():
    cfg, exps = experiments_for(precision="bf16-true", devices=8, global_batch_size=64)
    cfg["site"] = site_of("gadi") | {"scheduler": "local"}
    preflight.preflight(cfg, exps, "/anywhere")


def test_preflight_refuses_a_slurm_gpu_site_that_does_not_say_its_node_shape():
    """Without cores and memory a GPU job would ask Slurm for no CPUs and a few GB (the shipped generic profile),
    and fail after the queue: refused, naming both keys and how to read them off the cluster."""
    cfg, exps = experiments_for()
    text = refusal(cfg, exps, site_of("slurm"))
    assert ("site 'slurm' (Slurm, 4 GPUs a node) does not say its GPU nodes' site.cpus_per_node (cores) and"
            " site.mem_per_node_gb (memory in GB), from which each GPU job's --cpus-per-task and --mem are sized: set"
            " site.cpus_per_node and site.mem_per_node_gb in the profile's site.yaml") in text
    assert "sinfo -N" in text
    assert "site.cpus_per_node (cores)" not in refusal(cfg, exps, site_of("slurm", cpus_per_node=64))
    cfg["site"] = site_of("slurm", cpus_per_node=64, mem_per_node_gb=500)
    preflight.preflight(cfg, exps, "/home/user/run")
    cfg["site"] = site_of("slurm", gpus_per_node=0)  # a CPU cluster: jobs keep their threads and mem_mb
    preflight.preflight(cfg, exps, "/home/user/run")


# ---------------------------------------------------------------------------------------------------- float8
HOPPER = site_of("slurm", gpu_model="H100", gpus_per_node=8, cpus_per_node=112, mem_per_node_gb=2000)


def float8_experiments(**finetune) -> tuple[dict, dict]:
    return experiments_for(**{"engine": "fsdp2", "float8": True, "precision": "bf16-true", **finetune})


@pytest.mark.parametrize("gpu", ["H100", "H200", "NVIDIA H100 80GB HBM3", "GH200", "L4", "NVIDIA L40S", "B200",
                                 "NVIDIA GeForce RTX 4090", "NVIDIA RTX 6000 Ada Generation"])
def test_float8_runs_on_gpus_with_fp8_tensor_cores(gpu):
    cfg, exps = float8_experiments()
    cfg["site"] = {**HOPPER, "gpu_model": gpu}
    preflight.preflight(cfg, exps, "/home/user/run")


@pytest.mark.parametrize(("site", "gpu", "capability"), [(GADI, "V100", "7.0"), (ASPIRE, "A100", "8.0"),
                                                         (site_of("slurm", gpu_model="NVIDIA A10G"), "NVIDIA A10G", "8.6")])
def test_float8_is_refused_on_older_gpus_naming_the_key_and_why(site, gpu, capability):
    cfg, exps = float8_experiments(precision="16-mixed" if gpu == "V100" else "bf16-true")
    text = refusal(cfg, exps, site, workdir="/scratch/ab12/run")
    assert (f"experiment 'baseline': finetune.float8 true needs FP8 tensor cores (compute capability 8.9 or newer:"
            f" H100, H200, L4, L40, B100, B200); the {gpu} of site '{site['name']}' has compute capability"
            f" {capability}: set float8: false for this site") in text


def test_float8_on_a_site_whose_gpu_is_not_known_asks_for_its_name():
    cfg, exps = float8_experiments()
    text = refusal(cfg, exps, site_of("slurm"))  # gpu_model null: the jobs' GPU is unknown
    assert "the GPU of site 'slurm' ('GPU') is not one the workflow knows: set site.gpu_model to its name" in text


def test_float8_on_a_local_site_follows_this_machines_gpu(monkeypatch):
    import shutil

    cfg, exps = float8_experiments()
    local = site_of("slurm") | {"name": "local", "scheduler": "local", "launcher": "local", "gpu_model": None}
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no nvidia-smi: no GPU
    assert "site 'local' has no GPU: set float8: false" in refusal(cfg, exps, local)
    monkeypatch.setattr(preflight, "site_gpu", lambda site: "NVIDIA H100 80GB HBM3")
    preflight.preflight(cfg, exps, "/home/user/run")


def test_float8_keeps_bf16_weights():
    cfg, exps = float8_experiments(precision="16-mixed")
    assert "finetune.float8 true keeps bf16 weights (torchao float8), but finetune.precision is 16-mixed: use" \
        " bf16-true" in refusal(cfg, exps, HOPPER)


def test_float8_scoring_is_checked_against_the_sites_gpu_like_float8_training():
    """evaluate.float8 (the fast scorer's float8 linear layers) is refused before any job on a site without FP8
    tensor cores, naming the key: once for the shared section, which scores the base model too."""
    cfg = default_config()
    cfg["evaluate"].update(float8=True, scorer="fast", precision="bf16-true")
    cfg["experiments"] = [{"name": "baseline"}]
    exps = check(cfg, load_schema(SCHEMA))
    text = refusal(cfg, exps, ASPIRE, workdir="/scratch/ab12/run")
    assert ("evaluate.float8 true (the base model's scoring) needs FP8 tensor cores (compute capability 8.9 or newer:"
            " H100, H200, L4, L40, B100, B200); the A100 of site 'aspire2a' has compute capability 8.0: set float8:"
            " false for this site") in text
    assert text.count("evaluate.float8 true") == 1
    cfg["site"] = HOPPER
    preflight.preflight(cfg, exps, "/home/user/run")


def test_float8_scoring_needs_the_fast_scorer_on_a_gpu_in_bf16():
    refused = "config 'evaluate': float8 "
    for evaluate, said in (
            ({"float8": True, "scorer": "reference"}, "needs scorer fast (the reference scorer has no float8 path)"),
            ({"float8": True, "scorer": "fast", "device": "cpu"}, "scores on GPUs with FP8 tensor cores, with bf16"
             " outside the linear layers; device cpu and precision auto cannot"),
            ({"float8": True, "scorer": "fast", "precision": "16-true"}, "precision 16-true cannot")):
        said = refused + said if said.startswith(("needs", "scores")) else said
        cfg = default_config()
        cfg["evaluate"].update(evaluate)
        cfg["experiments"] = []  # scoring only, as the Samsung preset: the shared section is still checked
        with pytest.raises(ConfigError, match=re.escape(said)):
            check(cfg, load_schema(SCHEMA))


def test_compute_capability_by_name():
    cc = preflight.compute_capability
    assert [cc(n) for n in ("Tesla V100-SXM2-32GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A10", "h100", "NVIDIA L4")] == \
        [(7, 0), (8, 0), (8, 6), (9, 0), (8, 9)]
    assert cc("GPU") is None and cc(None) is None


# ------------------------------------------------------------------------------------------ multi-node launch


def test_a_run_that_cannot_fit_on_the_disk_is_refused_with_the_figures(tmp_path, monkeypatch):
    cfg, exps = experiments_for()
    cfg["model"]["name"] = "Llama-2-7b-hf"
    cfg["site"] = site_of("gadi") | {"scheduler": "local"}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(100e9, 90e9, 10e9))  # 10 GB free
    with pytest.raises(ConfigError) as err:
        preflight.preflight(cfg, exps, tmp_path)
    text = str(err.value)
    assert f"the run writes about 42.0 GB under {tmp_path / 'results'}" in text
    assert "hub weights 14.0 GB, LitGPT checkpoint 14.0 GB, baseline: fine-tuned model 14.0 GB" in text
    assert "has 10.0 GB free" in text
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(100e9, 10e9, 90e9))
    preflight.preflight(cfg, exps, tmp_path)  # fits: nothing to say


def test_a_read_only_results_folder_is_refused_before_any_job(tmp_path, monkeypatch, capsys):
    """Found by the preflight with what to do, not by Snakemake at the first job (a dry run warns)."""
    import os

    cfg, exps = experiments_for()
    cfg["site"] = site_of("gadi") | {"scheduler": "local"}
    stage = tmp_path / "results/finetune"
    stage.mkdir(parents=True)
    stage.chmod(0o555)
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != stage and access(path, mode))  # root too
    with pytest.raises(ConfigError) as err:
        preflight.preflight(cfg, exps, tmp_path)
    assert (f"{stage} is not writable (read-only, or another user's): every job writes its outputs under"
            f" {tmp_path / 'results'}; make it writable (chmod -R u+w {stage})") in str(err.value)
    preflight.preflight(cfg, exps, tmp_path, dry_run=True)
    assert f"preflight warning (a real run would be refused): {stage} is not writable" in capsys.readouterr().err
    stage.chmod(0o755)


def test_a_real_pbs_run_without_qsub_is_refused_before_the_downloads():
    with pytest.raises(ConfigError, match=r"qsub is not on PATH: run snakemake on a login node of the PBS cluster,"
                                          r" or load its PBS module first"):
        preflight.check_submit_command(GADI, which=lambda name: None)
    preflight.check_submit_command(GADI, which=lambda name: f"/opt/pbs/bin/{name}")
    preflight.check_submit_command(site_of("slurm"), which=lambda name: None)  # Slurm: the plugin's own check


# ------------------------------------------------------------------------------------- fsdp2 memory per GPU

def fsdp2_experiments(model="Llama-2-7b-hf", **finetune) -> tuple[dict, dict]:
    cfg = default_config()
    cfg["model"]["name"] = model
    cfg["finetune"].update(dict(engine="fsdp2", precision="16-mixed", global_batch_size=64, micro_batch_size=4,
                                max_seq_length=512), **finetune)
    cfg["experiments"] = [{"name": "fast"}]
    return cfg, check(cfg, load_schema(SCHEMA))


def test_fsdp2_memory_is_predicted_per_gpu_before_queueing(capsys):
    cfg, exps = fsdp2_experiments(devices=4, num_nodes=2)
    cfg["site"] = GADI
    preflight.preflight(cfg, exps, "/scratch/ab12/run")
    said = capsys.readouterr().err
    # 32 GB V100s: the gathered fp32 model would not fit beside its shards, so auto shards over all 8 GPUs
    assert "preflight: experiment 'fast' (fsdp2, Llama-2-7b-hf, 4 GPU(s) x 2 node(s)): predicted peak at most" in said
    assert "of 32 GB per GPU (full sharding: weights, gradients and optimizer 13.5 GB" in said


def test_an_fsdp2_run_that_cannot_fit_is_refused_with_the_figures_and_the_levers():
    cfg, exps = fsdp2_experiments(devices=2, num_nodes=1)
    said = refusal(cfg, exps, GADI, workdir="/scratch/ab12/run")
    assert "experiment 'fast': predicted 54.1 GB per GPU with one row of 512 tokens per micro batch and activation " \
           "checkpointing on, over 85% of 32 GB (finetune.engine_options.memory_fraction)" in said
    assert "Spread them over more GPUs (devices, num_nodes), use sharding full" in said


def test_fsdp2_micro_rows_that_cannot_fit_are_refused():
    cfg, exps = fsdp2_experiments(devices=4, num_nodes=2, precision="bf16-true", global_batch_size=128,
                                  engine_options={"micro_rows": 12, "activation_checkpointing": "off"})
    said = refusal(cfg, exps, ASPIRE, workdir="/scratch/ab12/run")
    assert "finetune.engine_options micro_rows 12 with activation_checkpointing off is predicted at 40.3 GB" in said
    assert "over 85% of 40 GB" in said
    cfg["finetune"]["engine_options"] = {"micro_rows": 8, "activation_checkpointing": "off"}
    exps = check(cfg, load_schema(SCHEMA))
    cfg["site"] = ASPIRE
    preflight.preflight(cfg, exps, "/scratch/ab12/run")


def test_stock_runs_and_models_the_estimate_does_not_know_are_not_refused(capsys):
    cfg, exps = fsdp2_experiments(model="Mixtral-8x7B-v0.1", devices=4, num_nodes=2)
    cfg["site"] = GADI
    preflight.preflight(cfg, exps, "/scratch/ab12/run")
    assert "memory not predicted (model 'Mixtral-8x7B-v0.1': MLP LLaMAMoE is not one the memory estimate knows)" \
        in capsys.readouterr().err
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=64,
                                micro_batch_size=4)
    cfg["model"]["name"] = "Llama-2-7b-hf"
    cfg["site"] = GADI
    preflight.preflight(cfg, exps, "/scratch/ab12/run")
    assert "predicted" not in capsys.readouterr().err


def test_unpacked_fsdp2_runs_are_predicted_for_stocks_micro_batch(capsys):
    cfg, exps = fsdp2_experiments(devices=4, num_nodes=2, precision="bf16-true", global_batch_size=128,
                                  micro_batch_size=16, engine_options={"packing": False})
    cfg["site"] = ASPIRE
    preflight.preflight(cfg, exps, "/scratch/ab12/run")  # 16 rows do not fit without checkpointing: auto turns it on
    assert "for 16 row(s) of 512 tokens, checkpointing on)" in capsys.readouterr().err
    cfg["finetune"]["engine_options"] = {"packing": False, "activation_checkpointing": "off"}
    said = refusal(cfg, check(cfg, load_schema(SCHEMA)), ASPIRE, workdir="/scratch/ab12/run")
    assert "predicted 51.4 GB per GPU with 16 unpacked samples of up to 512 tokens per micro batch and activation " \
           "checkpointing off (engine_options; auto would turn it on)" in said
    assert said.endswith("or turn packing on (the engine then fits its rows)")


def test_scoring_over_nodes_needs_a_multi_node_launcher_and_whole_nodes():
    cfg, exps = experiments_for()
    cfg["evaluate"].update(scorer="fast", gpus=8)
    exps = check(cfg, load_schema(SCHEMA))
    assert "evaluate.gpus 8 per node, but a gadi node has 4 GPUs: set gpus to 4 or less and raise evaluate.num_nodes" \
        in refusal(cfg, exps, GADI, workdir="/scratch/ab12/run")
    cfg["evaluate"].update(gpus=4, num_nodes=2)
    exps = check(cfg, load_schema(SCHEMA))
    local = dict(GADI, launcher="local")
    assert "evaluate.num_nodes 2 with site.launcher 'local', which starts processes on one node only" in \
        refusal(cfg, exps, local, workdir="/scratch/ab12/run")
    cfg["site"] = GADI
    preflight.preflight(cfg, exps, "/scratch/ab12/run")


def test_scoring_over_nodes_is_for_the_fast_scorer():
    cfg, exps = experiments_for()
    cfg["evaluate"].update(scorer="reference", num_nodes=2)
    with pytest.raises(ConfigError, match="num_nodes 2 needs scorer fast on GPUs"):
        check(cfg, load_schema(SCHEMA))
