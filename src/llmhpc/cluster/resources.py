"""What a job asks its scheduler for, derived from the site and the model (llmhpc.cluster.site hands the site to
jobs). Standard library only: the PBS commands import it.

Snakemake's `threads` of a job means different things by where it runs:

- local (no scheduler): the cores the job takes from this machine. GPU jobs take all of them, so that two of
  them never share the GPU and each scores or trains with every core.
- under a scheduler: what one process of the job gets. Both GPU rules run one process per GPU (the fine-tune
  through srun/mpirun/torchrun, scoring on one GPU), so it is the CPUs of a GPU: cpus_per_node / gpus_per_node.
  Slurm asks for it as --cpus-per-task of each task; PBS sizes GPU jobs from the site itself (llmhpc.cluster.pbs).
  Using the login node's core count there asked Slurm for CPUs the compute nodes may not have.

Where the site does not say how many cores a node has, a Slurm job asks for no CPUs at all (the partition's
default, e.g. DefCpuPerGPU, applies) and its processes use one thread each.
"""

from __future__ import annotations

from llmhpc.cluster.site import Site


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


def slurm_cpus_per_task(site: Site | dict) -> int:
    """The plugin's `cpus_per_task` resource: 0 = use threads (known node shape); -1 = no CPU option at all."""
    if Site.of(site).scheduler != "slurm" or cpus_per_gpu(site):
        return 0
    return -1


def slurm_gres(site: Site | dict, gpus_per_node: int) -> str:
    """sbatch --gres of a GPU job: `gpu:N` on a Slurm site with GPUs, "" elsewhere (PBS takes gpus_per_node)."""
    site = Site.of(site)
    if site.scheduler != "slurm" or not site.gpus_per_node or gpus_per_node < 1:
        return ""
    return f"gpu:{gpus_per_node}"


def evaluate_gpus(evaluate: dict, site: Site | dict) -> int:
    """GPUs the scoring job needs: evaluate.gpus for the fast scorer (one for the reference scorer), none where it
    is told to score on CPU or the site has no GPUs."""
    if evaluate.get("device") == "cpu" or not Site.of(site).gpus_per_node:
        return 0
    return int(evaluate.get("gpus", 1)) if evaluate.get("scorer") == "fast" else 1


def model_parameters(name: str) -> float | None:
    """Parameters of a model from its LitGPT name (Llama-2-7b-hf: 7e9, pythia-14m: 1.4e7), None if the name says
    none. Read from the name because importing litgpt at parse time costs seconds."""
    import re

    found = re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", name)
    if not found:
        return None
    number, unit = found[-1]
    return float(number) * (1e9 if unit in "bB" else 1e6)


def convert_mem_mb(model_name: str) -> int:
    """Memory for converting a Hugging Face checkpoint to LitGPT's: litgpt loads a whole shard (about 10 GB for
    Llama-2-7b's .bin files) while it writes the converted weights, so 1.5 x the model's 16-bit weights plus 4 GB;
    at least 8 GB. Llama-2-7b: 25 GB; a 30B model: 94 GB."""
    params = model_parameters(model_name)
    if params is None:
        return 16000
    return max(8000, int(params * 2 * 1.5 / 1e6) + 4000)
