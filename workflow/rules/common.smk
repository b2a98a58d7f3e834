# Config checks and helper functions; every rule file uses these.
import gc
import os
import sys
from pathlib import Path

# Everything loaded before the workflow is read (Snakemake, its plugins, pandas: millions of objects) lives as long
# as the process. Freezing it keeps Python's cyclic garbage collector from walking all of it again, in the full
# collections during the parse and at interpreter exit, in the driver and in every cluster job's own Snakemake
# (docs/bench-workflow.md has the parse time it saves). Reference counting still frees whatever these objects let go
# of.
gc.freeze()

# The workflow's logic lives in src/llmhpc; make it importable here and in every job's script, also where it
# is not pip-installed (a conda env, a cluster venv): jobs inherit this process's environment.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from llmhpc.snakefile_helpers import PLOT_NAMES, export_pythonpath, is_dry_run, run_args, served_experiments

export_pythonpath(Path(workflow.basedir) / "src")

from llmhpc.cluster import cost, dryrun, preflight, resources
from llmhpc.cluster import site as cluster_site
from llmhpc.config import check, load_schema
from llmhpc.interrupt import forward_sigint_to_jobs
from llmhpc.stages.data import check_alpaca, read_hellaswag
from llmhpc.stages.submission import archive_name

SCHEMA = load_schema(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
# The site (scheduler, nodes, project, NCCL/MPI settings) comes from the cluster profile's site.yaml.
cluster_site.apply_site(config, SCHEMA["properties"]["site"])
# Validate, fill defaults and check the batch arithmetic before any job is built: a wrong config stops here.
EXPERIMENTS = check(config, SCHEMA)
SITE = cluster_site.Site.of(config["site"])  # typed, once; config["site"] (its mapping) travels to jobs as JSON
if workflow.is_main_process:
    # A SIGINT to Snakemake alone reaches the running local jobs too (Snakemake 9 waits for them without a signal), so
    # that a fine-tune saves a step checkpoint and stops in seconds: llmhpc.interrupt.
    forward_sigint_to_jobs()
    # Refuse what cannot run on the site before anything is queued; jobs and the PBS commands inherit the site.
    preflight.preflight(
        config, EXPERIMENTS, Path.cwd(), preflight.set_resources_of(workflow, "finetune"), dry_run=is_dry_run(sys.argv)
    )
    if not is_dry_run(sys.argv):
        preflight.check_submit_command(SITE)  # qsub on PATH, before the downloads rather than at the first job
    cluster_site.export_site(config["site"])
    dryrun.register_dry_run_plan(workflow, SITE)  # `-n` lists the qsub (and their cost) or sbatch lines
    if SITE.on_scheduler:
        cost.register_run_estimate(workflow, SITE)  # a real run records every job's estimated cost before submitting
# The experiments serve_check serves (serve.enabled; none otherwise): their figures join the summary and the bundle.
SERVED = served_experiments(config, EXPERIMENTS) if config["serve"]["enabled"] else []
# Relative to the working directory, so that a copied or moved project (results and all) finds the same input
# paths and parameters in Snakemake's records instead of remaking the data and everything after it.
EMBEDDED = Path(os.path.relpath(Path(workflow.basedir) / "src/llmhpc/embedded"))
ENV_MANIFEST = "results/env/manifest.json"
# This run's --configfiles/--config as shell words: the report (a nested `snakemake --report`) and the slides'
# reproduce slide repeat them, so that both describe the run that made them.
RUN_ARGS = run_args(workflow.config_settings.configfiles, workflow.config_settings.config_args)


def check_local_data():
    """Datasets given as local paths are checked record by record now, not in a queued job (once, by the main
    process: every cluster job re-reads the workflow)."""
    ft = config["data"]["finetune"]
    if ft["source"] == "path":
        for name in ("train.json", "val.json"):
            check_alpaca(Path(ft["path"]) / name)
    ev = config["data"]["eval"]
    if ev["source"] == "path":
        read_hellaswag(ev["path"])


if workflow.is_main_process:
    check_local_data()


wildcard_constraints:
    experiment="|".join(EXPERIMENTS),
    model="|".join(["base", *EXPERIMENTS]),


def finetune_settings(wildcards):
    return EXPERIMENTS[wildcards.experiment]["finetune"]


def finetune_gres(wildcards):
    """sbatch --gres of the fine-tune: the experiment's devices as GPUs on each node ("" without Slurm GPUs)."""
    return resources.slurm_gres(SITE, finetune_settings(wildcards)["devices"])


# Threads of the GPU jobs: every local core without a scheduler (one GPU job at a time here), else the CPUs of
# one GPU for each of the job's processes (llmhpc.cluster.resources says why). On a machine without a GPU the
# fine-tunes and the scorings are CPU jobs with no GPU to share: half the cores each, so that two run side by side
# and each one's single-threaded start-up (imports, data, checkpoint load and save) overlaps the other's work
# instead of following it, and a scoring starts on the first core a fine-tune frees. The fine-tunes go first
# (the finetune rule has a priority) as the long jobs every later one waits for.
GPU_JOB_THREADS = resources.gpu_job_threads(SITE, workflow.cores)
FINETUNE_THREADS = EVALUATE_THREADS = GPU_JOB_THREADS
if not SITE.on_scheduler and not resources.local_gpu_present():
    FINETUNE_THREADS = EVALUATE_THREADS = max(1, GPU_JOB_THREADS // 2)
SLURM_CPUS_PER_TASK = resources.slurm_cpus_per_task(SITE)
# sbatch -A, -p, -C and --qos of every job sent to the cluster, from site.account, partition, constraint and qos.
SLURM_SITE = resources.slurm_site_resources(SITE)


def finetune_mem_mb(wildcards):
    """The fine-tune's memory: its GPUs' share of each node, at least what its processes need for the model."""
    ft = finetune_settings(wildcards)
    return resources.gpu_job_mem_mb(SITE, config["model"]["name"], ft["devices"], ft["num_nodes"])


def evaluate_cpus_per_task(wildcards):
    """Scoring is one task that starts a process per GPU: the CPUs of all its GPUs."""
    return resources.slurm_cpus_per_task(SITE, evaluate_gpus(wildcards))


def evaluate_mem_mb(wildcards):
    nodes = evaluate_settings(wildcards)["num_nodes"] if evaluate_gpus(wildcards) else 1
    return resources.gpu_job_mem_mb(SITE, config["model"]["name"], evaluate_gpus(wildcards), nodes)


def evaluate_gpus(wildcards):
    return resources.evaluate_gpus(evaluate_settings(wildcards), SITE)


def evaluate_gres(wildcards):
    return resources.slurm_gres(SITE, evaluate_gpus(wildcards))


def evaluate_settings(wildcards):
    name = wildcards.model
    return config["evaluate"] if name == "base" else EXPERIMENTS[name]["evaluate"]


def finetune_data_input(wildcards):
    source = config["data"]["finetune"]
    if source["source"] == "embedded":
        return [EMBEDDED / "train.json", EMBEDDED / "val.json"]
    if source["source"] == "path":
        return [Path(source["path"]) / "train.json", Path(source["path"]) / "val.json"]
    return []


def eval_data_input(wildcards):
    source = config["data"]["eval"]
    if source["source"] == "embedded":
        return [EMBEDDED / "hellaswag.jsonl"]
    if source["source"] == "path":
        return [source["path"]]
    return []


def checkpoint_for(wildcards):
    """The LitGPT checkpoint directory that evaluate scores: the base model or an experiment's fine-tune."""
    if wildcards.model == "base":
        return "results/checkpoints/base"
    return f"results/finetune/{wildcards.model}/out/final"


def get_final_output():
    submission = archive_name(config, EXPERIMENTS)
    return [
        "results/summary.csv",
        *expand("results/plots/{name}.{ext}", name=PLOT_NAMES, ext=["png", "svg"]),
        *expand("results/slides/{name}", name=["deck.html", "deck.pdf", "deck.pptx", "slides.json"]),
        *expand("results/submission/{name}.{ext}", name=submission, ext=["tar.gz", "sha256"]),
        # serve_check (workflow/rules/serve_check.smk) only when asked for: it starts a server and load-tests it
        *expand("results/serve/{experiment}/metrics.json", experiment=SERVED),
    ]
