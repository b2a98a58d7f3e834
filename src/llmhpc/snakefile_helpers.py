"""What the rule files need while Snakemake parses the workflow: nothing here imports pandas, matplotlib or
torch, since every job (cluster jobs too) parses the whole workflow again."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from llmhpc.cluster.profiles import available as available_profiles

# The plots stage's figures, results/plots/<name>.{png,svg}: the rules, the slides and the plots module share
# this one list.
PLOT_NAMES = ("loss", "throughput", "time_breakdown", "memory", "eval_accuracy", "eval_tradeoff", "accuracy_samples")


def export_pythonpath(src) -> None:
    """Put src first on PYTHONPATH so that every job's script (which runs in its own Python, maybe from a
    conda env or a cluster venv without this package installed) imports this package."""
    parts = [str(src)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(src)]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def run_args(configfiles, config_args) -> str:
    """A run's --configfiles/--config as shell words, so that the reproduce slide shows the command that made
    the deck (paths inside the working directory are written relative to it)."""
    args = []
    if configfiles:
        args += ["--configfiles", *(_relative_to_cwd(p) for p in configfiles)]
    if config_args:
        args += ["--config", *map(str, config_args)]
    return " ".join(shlex.quote(a) for a in args)


def _relative_to_cwd(path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cluster_profiles(profiles_dir) -> list[str]:
    """Cluster profiles shipped with the workflow, for the reproduce slide (not `default`, the local one that
    plain `snakemake` loads anyway)."""
    return [f"profiles/{name}" for name in available_profiles(Path(profiles_dir))]




def is_dry_run(argv: list[str]) -> bool:
    """Whether the command line asks for a dry run (-n, --dry-run, --dryrun, or -n among combined short flags such
    as -pn). Snakemake itself says so only once its executor is set up, after the workflow is parsed."""
    for arg in argv[1:]:
        if arg in ("--dry-run", "--dryrun"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and "n" in arg[1:]:
            return True
    return False


def served_experiments(config: dict, experiments) -> list[str]:
    """The experiments serve_check runs on (serve.experiments, empty = all); an unknown name stops the run."""
    chosen = config["serve"]["experiments"]
    unknown = [name for name in chosen if name not in experiments]
    if unknown:
        raise ValueError(f"serve.experiments names {unknown}, which are not experiments: {list(experiments)}")
    return list(chosen or experiments)
