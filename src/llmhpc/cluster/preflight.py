"""The compute site a run uses, and the checks made against it before anything is queued.

The site (scheduler, node shape, project, queues, modules, NCCL/MPI settings) is site knowledge, so it lives in
the cluster profile: `profiles/<site>/site.yaml`, beside the profile's config.yaml. Snakemake has no way to
hand a profile's own file to the workflow that survives the user's `--configfile` (a command-line
`--configfile` replaces the profile's `configfiles:` list instead of adding to it), so the workflow finds the
profile itself, the way Snakemake does (`--profile` arguments, else $SNAKEMAKE_PROFILE), and reads its
site.yaml. A `site:` section in the user's config overrides single keys of it (say, `project`).

Jobs re-parse the workflow without `--profile`; the resolved site reaches them, and the submit, status and
cancel commands, through the environment variable LLMHPC_SITE (JSON), which the main process sets.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from llmhpc.cluster.site import SITE_FILE, Site, site_gpu
from llmhpc.eval import registry
from llmhpc.schema_check import ConfigError
from llmhpc.settings import FLOAT8_CAPABILITY, FLOAT8_GPUS, FinetuneSettings
from llmhpc.train.registry import ENGINES
from llmhpc.train.registry import of as engine_of

_GADI_PATH = re.compile(r"^/(g/data|scratch)/([^/]+)")


def config_paths(config: dict, workdir: str | Path) -> list[tuple[str, str]]:
    """(config key, path) of every file-system location the jobs touch: the working directory and paths in the
    config."""
    out = [("working directory", str(Path(workdir).resolve()))]
    candidates = [("model.path", config["model"].get("path")),
                  ("data.finetune.path", config["data"]["finetune"].get("path")),
                  ("data.eval.path", config["data"]["eval"].get("path")),
                  ("env.venv", config["env"].get("venv"))]
    for key, value in candidates:
        if value:
            out.append((key, os.path.abspath(value)))
    return out


def check_storage(site: Site | dict, paths: list[tuple[str, str]]) -> list[str]:
    site = Site.of(site)
    problems = []
    for key, path in paths:
        match = _GADI_PATH.match(path)
        if not match:
            continue
        need = ("gdata" if match.group(1) == "g/data" else "scratch") + "/" + match.group(2)
        if need not in site.storage:
            have = "+".join(site.storage) or "nothing"
            problems.append(f"{key} {path} is on {need}, which the jobs would not mount (-l storage={have}):"
                            f" add '{need}' to site.storage")
    return problems


def check_node_shape(site: Site | dict) -> list[str]:
    """A Slurm site with GPUs must say its GPU nodes' cores and memory: GPU jobs ask for their GPUs' share of them
    (llmhpc.cluster.resources). Without them a 7B fine-tune would ask for no CPUs and a few GB, and fail after
    the queue."""
    site = Site.of(site)
    if site.scheduler != "slurm" or not site.gpus_per_node:
        return []
    missing = [f"site.{key} ({what})" for key, what in (("cpus_per_node", "cores"), ("mem_per_node_gb", "memory in GB"))
               if not getattr(site, key)]
    if not missing:
        return []
    return [f"site '{site.name}' (Slurm, {site.gpus_per_node} GPUs a node) does not say its GPU nodes' "
            f"{' and '.join(missing)}, from which each GPU job's --cpus-per-task and --mem are sized: set "
            f"{' and '.join(m.split(' ')[0] for m in missing)} in the profile's {SITE_FILE} or in your config "
            f"(site: {{cpus_per_node: 64, mem_per_node_gb: 500}}); `sinfo -N -o '%N %c %m %G'` lists each node's "
            f"cores, memory (MB) and GPUs"]


def check_experiment(name: str, ft: dict, evaluate: dict, site: Site | dict) -> list[str]:
    """What stops experiment `name` from running on `site`, each with what to change."""
    site = Site.of(site)
    where = f"experiment '{name}'"
    problems = []  # batch arithmetic over devices x num_nodes is refused earlier, by llmhpc.config.check
    model = (site.gpu_model or "").upper()
    if "V100" in model and ft["precision"].startswith("bf16"):
        problems.append(f"{where}: finetune.precision {ft['precision']} on {site.gpu_model}, which has no bf16"
                        f" tensor cores: use 16-mixed (pure 16-true full fine-tuning is known to diverge)")
    if "V100" in model and evaluate["precision"].startswith("bf16"):
        problems.append(f"{where}: evaluate.precision {evaluate['precision']} on {site.gpu_model}, which has no"
                        f" bf16: use 16-true or 32-true")
    gpus = site.gpus_per_node
    if gpus and ft["devices"] > gpus:
        problems.append(f"{where}: finetune.devices {ft['devices']} per node, but a {site.name} node has"
                        f" {gpus} GPUs: set devices to {gpus} or less and raise num_nodes")
    if ft["num_nodes"] > 1 and site.launcher == "local":
        problems.append(f"{where}: finetune.num_nodes {ft['num_nodes']} with site.launcher 'local', which starts"
                        f" processes on one node only: set site.launcher to mpirun or pernode (PBS) or srun (Slurm)")
    nodes = evaluate.get("num_nodes", 1)
    if nodes > 1 and site.launcher == "local":
        problems.append(f"{where}: evaluate.num_nodes {nodes} with site.launcher 'local', which starts processes on"
                        f" one node only: set site.launcher to mpirun or pernode (PBS) or srun (Slurm)")
    if gpus and registry.gpus_per_node(evaluate) > gpus:  # a scorer that spreads over evaluate.gpus
        problems.append(f"{where}: evaluate.gpus {evaluate['gpus']} per node, but a {site.name} node has {gpus} GPUs:"
                        f" set gpus to {gpus} or less and raise evaluate.num_nodes")
    if site.launcher == "srun" and site.scheduler != "slurm":
        problems.append(f"{where}: site.launcher 'srun' needs site.scheduler 'slurm'")
    return problems


# Compute capability by GPU name (a site's gpu_model, or nvidia-smi's name), newest first; case does not matter.
COMPUTE_CAPABILITY = [
    (r"\bG?B[123]00\b", (10, 0)),  # Blackwell data centre: B100, B200, GB200, B300
    (r"\bG?H[12]00\b|\bH800\b|\bH20\b", (9, 0)),  # Hopper: H100, H200, GH200
    (r"RTX 50\d\d|RTX PRO \d+ Blackwell", (12, 0)),  # Blackwell workstation
    (r"\bL4\b|\bL40S?\b|\bL20\b|RTX 40\d\d|\bAda\b", (8, 9)),  # Ada: L4, L40, L40S, RTX 4090, RTX 6000 Ada
    (r"\bA100\b|\bA800\b|\bA30\b", (8, 0)),
    (r"\bA10G?\b|\bA40\b|\bA16\b|\bA2\b|RTX 30\d\d|RTX A\d+", (8, 6)),
    (r"\bT4\b|RTX 20\d\d|Quadro RTX", (7, 5)),
    (r"\bV100\b|TITAN V\b", (7, 0)),
    (r"\bP100\b", (6, 0)),
]


def compute_capability(gpu: str | None) -> tuple[int, int] | None:
    """The CUDA compute capability of a GPU named like nvidia-smi or a site's gpu_model does, or None if unknown."""
    for pattern, capability in COMPUTE_CAPABILITY:
        if gpu and re.search(pattern, gpu, re.IGNORECASE):
            return capability
    return None


def check_float8(name: str | None, ft: dict, gpu: str | None, site_name: str, key: str = "finetune") -> list[str]:
    """FP8 training (finetune.float8) or scoring (evaluate.float8, `key`) needs FP8 tensor cores and bf16 weights;
    refused here rather than in a job that waited in the queue."""
    if not ft.get("float8"):
        return []
    where = f"experiment '{name}': {key}.float8 true" if name else f"{key}.float8 true (the base model's scoring)"
    capability = compute_capability(gpu)
    if gpu is None:
        return [f"{where} needs an NVIDIA GPU with FP8 tensor cores ({FLOAT8_GPUS}), and site '{site_name}' has"
                f" no GPU: set float8: false, or run on a site with such GPUs"]
    if capability is None:
        return [f"{where} needs FP8 tensor cores ({FLOAT8_GPUS}), and the GPU of site '{site_name}' ({gpu!r}) is"
                f" not one the workflow knows: set site.gpu_model to its name (e.g. H100), or float8: false"]
    if capability < FLOAT8_CAPABILITY:
        return [f"{where} needs FP8 tensor cores ({FLOAT8_GPUS}); the {gpu} of site '{site_name}' has compute"
                f" capability {capability[0]}.{capability[1]}: set float8: false for this site"]
    if key == "finetune" and not ft["precision"].startswith("bf16"):  # evaluate's: EvaluateSettings.problem
        return [f"{where} keeps bf16 weights (torchao float8), but {key}.precision is {ft['precision']}:"
                f" use bf16-true"]
    return []


def check_requested(name: str, ft: dict, overrides: dict) -> list[str]:
    """The finetune job's resources come from the experiment; a profile's --set-resources must not change them,
    or litgpt would be told a different devices x num_nodes than the scheduler grants."""
    problems = []
    for key, expected in (("nodes", ft["num_nodes"]), ("gpus_per_node", ft["devices"]),
                          ("gpu", ft["num_nodes"] * ft["devices"])):
        if key in overrides and overrides[key] != expected:
            problems.append(f"experiment '{name}': --set-resources finetune:{key}={overrides[key]} disagrees with"
                            f" finetune devices {ft['devices']} x num_nodes {ft['num_nodes']} (expected {expected});"
                            f" remove it from the profile and set devices/num_nodes in the config")
    return problems


def gpu_memory(site: Site, gpu: str | None) -> float | None:
    """GB of one GPU of the site: site.gpu_memory_gb, nvidia-smi's on a site without a scheduler (its jobs run
    here), else by the GPU's name; None where unknown."""
    import shutil
    import subprocess

    from llmhpc.train import memory

    if site.gpu_memory_gb or site.on_scheduler or gpu is None or not shutil.which("nvidia-smi"):
        return memory.gpu_memory_gb(gpu, site.gpu_memory_gb)
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        return round(float(out[0]) * 1.048576 / 1000, 1)  # MiB
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return memory.gpu_memory_gb(gpu)


def check_memory(name: str, ft: dict, model_name: str, gpu_gb: float | None, log=None) -> list[str]:
    """An fsdp2 experiment's predicted peak memory per GPU (printed), and a refusal when it cannot fit: the
    engine lowers the rows per micro batch and turns activation checkpointing on to fit, so only a run that
    overflows with one row and checkpointing (or with the micro_rows and checkpointing it was told) is refused."""
    from llmhpc.train import memory
    from llmhpc.train.fsdp2.args import EngineArgs

    log = log or (lambda text: print(text, file=sys.stderr))
    where = f"experiment '{name}'"
    if gpu_gb is None:
        return []
    s = FinetuneSettings.from_dict(ft)
    try:
        shape = memory.shape_of(model_name)
        engine = EngineArgs(**ENGINES[s.engine].options(s))
        common = dict(precision=s.precision, method=engine.method, devices=s.devices, num_nodes=s.num_nodes,
                      sharding=engine.sharding, micro_rows=engine.micro_rows, fraction=engine.memory_fraction,
                      row_len=s.max_seq_length, gpu_gb=gpu_gb, packing=engine.packing,
                      micro_batch_size=s.micro_batch_size)
        # the least the engine can do: checkpointing on (unless it was turned off), one packed row
        least = memory.predict(shape, checkpointing="off" if engine.activation_checkpointing == "off" else "on",
                               rows_needed=1, **common)
        planned = memory.predict(shape, checkpointing=engine.activation_checkpointing,
                                 rows_needed=max(1, s.per_rank), **common)
    except (ValueError, KeyError, ModuleNotFoundError) as exc:  # a model or MLP the estimate does not know
        log(f"preflight: {where}: memory not predicted ({exc})")
        return []
    log(f"preflight: {where} (fsdp2, {model_name}, {s.devices} GPU(s) x {s.num_nodes} node(s)): predicted peak at "
        f"most {planned.describe()}")
    budget = f"{engine.memory_fraction:.0%} of {gpu_gb:g} GB (finetune.engine_options.memory_fraction)"
    if not least.fits:
        ac = "on" if least.checkpointing else "off (engine_options; auto would turn it on)"
        rows = f"one row of {s.max_seq_length} tokens" if engine.packing else \
            f"{s.micro_batch_size} unpacked samples of up to {s.max_seq_length} tokens"
        return [f"{where}: predicted {least.peak_gb:.1f} GB per GPU with {rows} per micro batch and activation "
                f"checkpointing {ac}, over {budget}: weights, gradients and optimizer take {least.static_gb:.1f} GB "
                f"({least.sharding} sharding). Spread them over more GPUs (devices, num_nodes), use sharding full, "
                f"a lower-memory method (lora, qlora) or a shorter max_seq_length"
                + ("" if engine.packing else ", or turn packing on (the engine then fits its rows)")]
    if not planned.fits:
        asked = (f"finetune.engine_options micro_rows {engine.micro_rows}" if engine.packing else
                 f"micro_batch_size {s.micro_batch_size} without packing")
        return [f"{where}: {asked} with activation_checkpointing {engine.activation_checkpointing} is predicted at "
                f"{planned.peak_gb:.1f} GB per GPU, over {budget}: "
                + ("set micro_rows to auto (the engine picks what fits)" if engine.packing else
                   "turn packing on (the engine picks the rows that fit), lower micro_batch_size")
                + " or set activation_checkpointing to auto"]
    return []


def preflight(config: dict, experiments: dict, workdir, finetune_overrides: dict | None = None,
              dry_run: bool = False) -> None:
    """Refuse, before any job is queued, what cannot run on the configured site, or not fit on its disk, or not be
    written under results/ (a dry run only warns of the disk and of results/: it writes nothing, and is often made
    elsewhere than the real run)."""
    from llmhpc.cluster import disk

    site = Site.of(config["site"])
    problems = [p for p in (disk.problem(config, experiments, workdir), disk.unwritable(workdir)) if p]
    if dry_run:  # it writes nothing, and is often made elsewhere than the real run
        for problem in problems:
            print(f"preflight warning (a real run would be refused): {problem}", file=sys.stderr)
        problems = []
    fast = {name: s for name, s in experiments.items() if engine_of(s["finetune"]).predicts_memory}
    shared = config["evaluate"].get("float8")  # the base model's scoring, and the experiments' unless they say
    float8 = shared or any(s[key].get("float8") for s in experiments.values() for key in ("finetune", "evaluate"))
    gpu = site_gpu(site) if fast or float8 else None  # nvidia-smi (local sites) only then, and once
    if float8:
        problems += check_float8(None, config["evaluate"], gpu, site.name, "evaluate")
        for name, settings in experiments.items():
            problems += check_float8(name, settings["finetune"], gpu, site.name)
            if not shared:  # said once above where it is the shared key
                problems += check_float8(name, settings["evaluate"], gpu, site.name, "evaluate")
    if fast:  # the fsdp2 engine's memory, predicted (and refused where it cannot fit)
        gpu_gb = gpu_memory(site, gpu)
        for name, settings in fast.items():
            problems += check_memory(name, settings["finetune"], config["model"]["name"], gpu_gb)
    if site.scheduler == "local":
        if problems:
            raise ConfigError(f"preflight for site '{site.name}' refused:\n  " + "\n  ".join(problems))
        return
    problems += check_node_shape(site)
    if site.scheduler == "pbs" and not site.project:
        problems.append(f"site '{site.name}' (PBS) has no project code: set site.project in the profile's"
                        f" {SITE_FILE} or in your config (site: {{project: ab12}}); qsub -P charges it")
    for name, settings in experiments.items():
        problems += check_experiment(name, settings["finetune"], settings["evaluate"], site)
        problems += check_requested(name, settings["finetune"], finetune_overrides or {})
    if site.scheduler == "pbs" and site.pbs_resources == "gadi":
        problems += check_storage(site, config_paths(config, workdir))
    if problems:
        raise ConfigError(f"preflight for site '{site.name}' refused:\n  " + "\n  ".join(problems))


def check_submit_command(site: Site | dict, which=None) -> None:
    """A real run on a PBS site needs qsub here: refused before the downloads and local jobs run, not with a
    traceback at the first cluster job. (Not in a dry run, which may be made anywhere.)"""
    import shutil

    from llmhpc.cluster.pbs import not_on_path

    site = Site.of(site)
    if site.scheduler == "pbs" and (which or shutil.which)("qsub") is None:
        raise ConfigError(f"preflight for site '{site.name}' refused:\n  {not_on_path('qsub')}")


def set_resources_of(workflow, rule: str) -> dict:
    """--set-resources values given for `rule` (by the profile or the command line), as plain values."""
    overwrite = getattr(workflow.resource_settings, "overwrite_resources", None) or {}
    out = {}
    for key, value in (overwrite.get(rule) or {}).items():
        try:
            out[key] = getattr(value, "value", value)
        except ValueError:  # an expression of the job's wildcards: known only per job, not checked here
            continue
    return out
