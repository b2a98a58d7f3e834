"""The site: read from the cluster profile's site.yaml (the profile named on the command line or in
$SNAKEMAKE_PROFILE), overridden by config keys, and handed to every job and PBS command through $LLMHPC_SITE."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SITE_ENV = "LLMHPC_SITE"


@dataclass(frozen=True)
class Site:
    """The resolved site, typed: the schema's `site` section (every key described there; a test checks these
    defaults against it). Built once from the merged mapping (profile's site.yaml under the config's keys); the
    mapping itself travels to jobs and the PBS commands as JSON ($LLMHPC_SITE)."""

    name: str = "local"
    scheduler: str = "local"  # local / pbs / slurm
    pbs_resources: str = "select"  # select (-l select=...) / gadi (-l ngpus=,ncpus=,mem=,jobfs=,storage=)
    launcher: str = "local"  # local / mpirun / pernode / srun
    gpus_per_node: int = 0
    cpus_per_node: int | None = None
    mem_per_node_gb: float | None = None
    jobfs_gb: float | None = None
    gpu_model: str | None = None
    gpu_memory_gb: float | None = None
    project: str | None = None
    account: str | None = None  # Slurm: sbatch -A
    partition: str | None = None  # Slurm: sbatch -p
    constraint: str | None = None  # Slurm: sbatch -C
    qos: str | None = None  # Slurm: sbatch --qos
    queue: str | None = None
    cpu_queue: str | None = None
    copy_queue: str | None = None
    storage: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    env: dict[str, Any] = field(default_factory=dict)
    mpirun_args: tuple[str, ...] = ()
    remote_shell: tuple[str, ...] = ("ssh",)
    nodes_on_one_host: bool = False
    qsub_args: tuple[str, ...] = ()
    su_per_hour: dict[str, float] | None = None  # service units per resource-hour, by queue (llmhpc.cluster.cost)
    su_resource: str = "cpus"  # cpus (Gadi: max(ncpus, memory proportion)) / gpus / nodes
    su_mem_per_cpu_gb: dict[str, float] | None = None  # GB that count as one CPU in the charge, by queue (Gadi normal 4)
    compile_cache: str = ".cache/torch-compile"  # TORCHINDUCTOR_CACHE_DIR of GPU jobs; "" = torch's default

    @classmethod
    def of(cls, site: Site | dict | None) -> Site:
        """A Site from a Site or a site mapping (keys missing take the schema's defaults; None values of list
        keys read as empty)."""
        if isinstance(site, Site):
            return site
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(site or {}) - set(known))
        if unknown:
            raise ValueError(f"site: unknown key(s) {', '.join(unknown)}")
        values = {}
        for key, value in (site or {}).items():
            if isinstance(known[key].default, tuple):
                value = tuple(value or ())
            elif key == "env":
                value = dict(value or {})
            values[key] = value
        return cls(**values)

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else copy.deepcopy(v)) for k, v in dataclasses.asdict(self).items()}

    @property
    def on_scheduler(self) -> bool:
        return self.scheduler != "local"


def dump_site(site: Site | dict) -> str:
    return json.dumps(site.as_dict() if isinstance(site, Site) else site, sort_keys=True, separators=(",", ":"))


def load_site(text: str) -> dict:
    return json.loads(text)


def site_gpu(site) -> str | None:
    """The GPU model the jobs will run on (site: a Site or its mapping): the site's `gpu_model`; on a site without a
    scheduler, this machine's first GPU (nvidia-smi; its jobs run here); None where there is none."""
    site = Site.of(site)
    if site.gpu_model:
        return site.gpu_model
    if site.on_scheduler:
        return "GPU" if site.gpus_per_node else None
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out else None



SITE_FILE = "site.yaml"


def profile_args(argv: list[str], environ) -> list[str]:
    """The --profile values of a Snakemake command line (or $SNAKEMAKE_PROFILE when none is given), in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--profile="):
            found.append(arg.split("=", 1)[1])
    if not found and environ.get("SNAKEMAKE_PROFILE"):
        found.append(environ["SNAKEMAKE_PROFILE"])
    return [] if found == ["none"] else found


def profile_site_file(argv: list[str], environ, cwd: Path | None = None, warn=None) -> Path | None:
    """site.yaml of the last profile on the command line that has one, looked up as Snakemake looks profiles up
    (a path, else a folder of that name in the current directory or Snakemake's config folders). A bare name whose
    folder this checkout also has (profiles/<name>/site.yaml) takes this checkout's site: the installed profile may
    be a link into another clone, whose site.yaml this run must not silently use; a warning says so."""
    from snakemake.cli import get_profile_dir

    cwd = Path.cwd() if cwd is None else Path(cwd)
    warn = warn or (lambda message: print(message, file=sys.stderr))
    site = None
    for name in profile_args(argv, environ):
        entry = get_profile_dir(name)
        found = (Path(entry[0]) / SITE_FILE).resolve() if entry is not None else None
        here = (cwd / "profiles" / name / SITE_FILE).resolve()
        if "/" not in name and here.is_file():
            if found is not None and found != here:
                warn(f"--profile {name}: Snakemake found {found.parent}, from another checkout; this run takes its"
                     f" site from {here} (this checkout). --profile profiles/{name} uses this checkout's profile"
                     f" entirely; `python -m llmhpc.cluster.profiles install` here links the profiles to it.")
            site = here
        elif found is not None and found.is_file():
            site = found
    return site


def load_site_file(path: Path, site_schema: dict) -> dict:
    """The site file's mapping, checked against the schema's `site` section; errors name the file."""
    # Imported here: the PBS commands import this module for dump/load_site and must start fast.
    import yaml

    from llmhpc import schema_check

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise schema_check.ConfigError(f"site file {path}: expected a mapping of site keys, got {type(data).__name__}")
    problems = schema_check.problems(data, site_schema, prefix=("site",))
    if problems:
        raise schema_check.ConfigError(f"site file {path} refused:\n  " + "\n  ".join(problems))
    return data


def apply_site(config: dict, site_schema: dict, argv=None, environ=None) -> str:
    """Merge the profile's site under the config's `site:` keys, in place, before the config check. Return
    where the site came from (for messages)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    own = config.get("site") or {}
    if not isinstance(own, dict):
        return "config"  # the schema check names the problem
    site_file = profile_site_file(argv, environ)
    if site_file is not None:
        base, source = load_site_file(site_file, site_schema), str(site_file)
    elif environ.get(SITE_ENV):
        # a job of a cluster run: the main process's resolved site (which already holds the config's keys)
        base, source = load_site(environ[SITE_ENV]), f"${SITE_ENV}"
    else:
        base, source = {}, "config"
    merged = copy.deepcopy(base)
    merged.update(copy.deepcopy(own))
    config["site"] = merged
    return source


def export_site(site: dict, environ=None) -> None:
    """Hand the resolved site to jobs and to the scheduler commands (they inherit this process's environment)."""
    environ = os.environ if environ is None else environ
    environ[SITE_ENV] = dump_site(site)


# Gadi mounts /g/data/<project> and /scratch/<project> in a job only when `-l storage` names them.
