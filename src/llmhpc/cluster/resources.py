"""What a job asks its scheduler for, derived from the site and the model (llmhpc.cluster.site hands the site to
jobs). Standard library only: the PBS commands import it.

Snakemake's `threads` of a job means different things by where it runs:

- local (no scheduler): the cores the job takes from this machine. GPU jobs take all of them, so that two of
  them never share the GPU and each scores or trains with every core.
- under a scheduler: what one process of the job gets. Both GPU rules run one process per GPU (the fine-tune
  through srun/mpirun/torchrun, scoring on one GPU), so it is the CPUs of a GPU: cpus_per_node / gpus_per_node.
  Slurm is asked for the CPUs of each task's GPUs as --cpus-per-task, given outright (slurm_cpus_per_task); PBS
  sizes GPU jobs from the site itself (llmhpc.cluster.pbs). Using the login node's core count there asked Slurm
  for CPUs the compute nodes may not have, or fewer than a GPU's share.

Memory of a GPU job (gpu_job_mem_mb) is sized as the PBS sites size it: each node's GPUs' share of the node's memory,
at least what its processes need to load the model. A Slurm site with GPUs must say its node shape
(site.cpus_per_node, site.mem_per_node_gb): the preflight refuses it otherwise, rather than let a 7B fine-tune ask
Slurm for a laptop's memory and fail after the queue. On a Slurm site without GPUs and without a core count, jobs
ask for no CPUs (the partition's default applies).
"""

from __future__ import annotations

import os
from pathlib import Path

from llmhpc.cluster.site import Site
from llmhpc.eval import registry


def on_scheduler(site: Site | dict) -> bool:
    return Site.of(site).on_scheduler


def cpus_per_gpu(site: Site | dict) -> int | None:
    """CPU cores that go with one GPU of a node, or None where the site does not say."""
    site = Site.of(site)
    gpus, cpus = site.gpus_per_node, site.cpus_per_node
    if not gpus or not cpus:
        return None
    return max(1, cpus // gpus)


def gpu_job_threads(site: Site | dict, local_cores: int) -> int:
    """Snakemake threads of a GPU job: all local cores without a scheduler, else the CPUs of one GPU (or 1)."""
    if not on_scheduler(site):
        return max(1, local_cores or 1)
    return cpus_per_gpu(site) or 1


def slurm_cpus_per_task(site: Site | dict, gpus_per_task: int = 1) -> int:
    """The plugin's `cpus_per_task` resource: the CPUs of the task's GPUs (one for the fine-tune's task per GPU, all
    of a node's for scoring, one task that starts a process per GPU) where the site says its node shape, given
    outright (Snakemake caps a job's threads at the submitting machine's cores: a 4-core login node would ask for
    4); -1 = no CPU option at all; 0 off Slurm (unused)."""
    if Site.of(site).scheduler != "slurm":
        return 0
    per_gpu = cpus_per_gpu(site)
    return per_gpu * max(1, gpus_per_task) if per_gpu else -1


def slurm_site_resources(site: Site | dict) -> dict:
    """The Slurm plugin's resources for what the site names (site.account, partition, constraint, qos): sbatch -A,
    -p, -C and --qos of every job sent to the cluster. Empty off Slurm and for keys the site leaves null, so that a
    profile's own default-resources still apply there."""
    site = Site.of(site)
    if site.scheduler != "slurm":
        return {}
    named = {"slurm_account": site.account, "slurm_partition": site.partition, "constraint": site.constraint,
             "qos": site.qos}
    return {key: value for key, value in named.items() if value}


def slurm_gres(site: Site | dict, gpus_per_node: int) -> str:
    """sbatch --gres of a GPU job: `gpu:N` on a Slurm site with GPUs, "" elsewhere (PBS takes gpus_per_node)."""
    site = Site.of(site)
    if site.scheduler != "slurm" or not site.gpus_per_node or gpus_per_node < 1:
        return ""
    return f"gpu:{gpus_per_node}"


def evaluate_gpus(evaluate: dict, site: Site | dict) -> int:
    """GPUs the scoring job needs: evaluate.gpus for a scorer that spreads over GPUs (one for the others), none where it
    is told to score on CPU or the site has no GPUs."""
    if evaluate.get("device") == "cpu" or not Site.of(site).gpus_per_node:
        return 0
    return registry.gpus_per_node(evaluate)


def model_parameters(name: str) -> float | None:
    """Parameters of a model from its LitGPT name (Llama-2-7b-hf: 7e9, pythia-14m: 1.4e7), None if the name says
    none. Read from the name because importing litgpt at parse time costs seconds."""
    import re

    found = re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", name)
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * (1e9 if unit in "bB" else 1e6)


def load_mem_mb(model_name: str) -> int:
    """Host memory for reading the model's checkpoint: 1.5 x its 16-bit weights plus 4 GB (Llama-2-7b: 25 GB; a
    30B model: 94 GB; 16 GB where the name gives no size)."""
    params = model_parameters(model_name)
    if params is None:
        return 16000
    return int(params * 2 * 1.5 / 1e6) + 4000


def convert_mem_mb(model_name: str) -> int:
    """Memory for converting a Hugging Face checkpoint to LitGPT's: litgpt loads a whole shard (about 10 GB for
    Llama-2-7b's .bin files) while it writes the converted weights, so load_mem_mb; at least 8 GB."""
    return max(8000, load_mem_mb(model_name))


def gpu_job_mem_mb(site: Site | dict, model_name: str, gpus_per_node: int, nodes: int = 1) -> int:
    """mem_mb of a job with `gpus_per_node` GPUs on each of `nodes` nodes: per node, the larger of its GPUs' share of
    the node's memory and what its processes (one per GPU) need to load the model (load_mem_mb each), never more
    than the node has. Slurm reads mem_mb per node (sbatch --mem); PBS as the job's total (llmhpc.cluster.pbs
    divides it by the nodes), so there it is the per-node figure times the nodes. A 7B fine-tune on Gadi's 4 GPUs
    asks the whole node's 382 GB, on a site with no memory figure 4 x 25 GB."""
    site = Site.of(site)
    per_node = max(1, gpus_per_node) * load_mem_mb(model_name)
    if gpus_per_node and site.gpus_per_node and site.mem_per_node_gb:
        node_mb = int(site.mem_per_node_gb * 1000)
        per_node = min(node_mb, max(per_node, node_mb * gpus_per_node // site.gpus_per_node))
    return per_node * max(1, nodes) if site.scheduler == "pbs" else per_node


def local_gpu_present() -> bool:
    """Whether this machine shows its jobs a GPU: the device files of NVIDIA's or AMD's driver (no CUDA context is
    made: the workflow's own process never imports torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
