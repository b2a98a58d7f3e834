"""The submission stage: which files the competitions ask for (build and setup scripts, job scripts, LitGPT
configs, stdout and scheduler output, metrics, the slides as PDF; never weights), bundled by llmhpc.outputs.bundle
into one reproducible, checked tar.gz with its sha256."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable

import yaml

from llmhpc import atomic
from llmhpc.config import canonical
from llmhpc.outputs.bundle import WEIGHT_SUFFIXES, BundleError, Member, build, collect, tree

UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def archive_name(config: dict, experiments: dict) -> str:
    """The archive's file name without .tar.gz: submission.name where the config sets one; else the run name and
    what made its numbers, each set sorted and joined by +: the experiments' fine-tune engines and methods, the
    scorers (the base model's included) and the precisions of both, e.g. embedded-default_litgpt_full_fast_32-true.
    A stock run and an fsdp2 run of one config (or a full and a LoRA run) so get different archives; the same
    config always the same name, of letters, digits and ._+- only (a file name on any file system).
    `experiments`: llmhpc.config.check's answer."""
    if config["submission"]["name"]:
        return config["submission"]["name"]
    finetunes = [e["finetune"] for e in experiments.values()]
    evaluations = [config["evaluate"], *(e["evaluate"] for e in experiments.values())]
    parts = [config["run_name"], {f["engine"] for f in finetunes}, {f["method"] for f in finetunes},
             {e["scorer"] for e in evaluations},
             {f["precision"] for f in finetunes} | {e["precision"] for e in evaluations},
             "float8-scored" if any(e.get("float8") for e in evaluations) else ""]
    words = [p if isinstance(p, str) else "+".join(sorted(map(str, p))) for p in parts]
    return "_".join(UNSAFE.sub("-", w) for w in words if w)


def layout(experiments: Iterable[str], repo=".", results="results", slides="results/slides/deck.pdf",
           configfiles: Iterable = (), served: Iterable[str] = ()) -> list[tuple[Path, str]]:
    """The files every bundle of this workflow carries, as (source, archive path), mirroring what the
    competitions ask for: scripts/ (build, run, the workflow itself), configs/, outputs/, slides/.
    results/jobs and results/logs are not here: they are collected at run time (see `runtime_dirs`).
    `served`: the experiments serve_check measured (serve.enabled), whose metrics go in outputs/serve/."""
    repo, results = Path(repo), Path(results)
    experiments = list(experiments)
    pairs: list[tuple[Path, str]] = []
    # Build and setup: the venv build script, the pins, the conda environment.
    pairs += tree(repo / "envs", "scripts/build")
    # The serving container recipes (seed 004's Dockerfile; Apptainer for HPC sites), built on the same set-up.
    pairs.append((repo / "Dockerfile", "scripts/build/Dockerfile"))
    pairs.append((repo / "containers/llmhpc.def", "scripts/build/containers/llmhpc.def"))
    # Run: the cluster profiles (how Snakemake submits each job); the job scripts come from results/jobs.
    for profile in sorted(p for p in (repo / "profiles").glob("*") if p.is_dir()):
        pairs += tree(profile, f"scripts/run/profiles/{profile.name}")
    # The workflow itself, so the run scripts can be read with what they call.
    pairs.append((repo / "Snakefile", "scripts/workflow/Snakefile"))
    pairs += tree(repo / "workflow", "scripts/workflow/workflow")
    pairs += [(p, f"scripts/workflow/{a}") for p, a in tree(repo / "src/llmhpc", "src/llmhpc") if p.suffix == ".py"]
    pairs.append((repo / "pyproject.toml", "scripts/workflow/pyproject.toml"))
    # Configs: the workflow's and this run's config files, and LitGPT's config of each fine-tune.
    pairs.append((repo / "config/config.yaml", "configs/config.yaml"))
    for extra in configfiles:
        extra = Path(extra)
        if extra.resolve() != (repo / "config/config.yaml").resolve():
            pairs.append((extra, f"configs/configfiles/{extra.name}"))
    pairs += [(results / "finetune" / exp / "litgpt.yaml", f"configs/litgpt/{exp}.yaml") for exp in experiments]
    # Output texts: the summary, the environment manifest, each fine-tune's stdout and metrics, each evaluation.
    pairs.append((results / "summary.csv", "outputs/summary.csv"))
    pairs.append((results / "env/manifest.json", "outputs/env/manifest.json"))
    for exp in experiments:
        for name in ("finetune.stdout", "metrics.csv", "summary.json"):
            pairs.append((results / "finetune" / exp / name, f"outputs/finetune/{exp}/{name}"))
    for model in ["base", *experiments]:
        pairs.append((results / "evaluate" / model / "metrics.json", f"outputs/evaluate/{model}/metrics.json"))
    for exp in served:
        pairs.append((results / "serve" / exp / "metrics.json", f"outputs/serve/{exp}/metrics.json"))
    pairs.append((Path(slides), "slides/deck.pdf"))
    return pairs


def runtime_dirs(results="results") -> list[tuple[Path, str]]:
    """Folders whose content is only known when the bundle is made: the job scripts exactly as the cluster
    profiles submitted them, and every job's log (with the scheduler's output files under logs/scheduler/)."""
    results = Path(results)
    return [(results / "jobs", "scripts/run/jobs"), (results / "logs", "outputs/logs")]


def what_ran(summary_csv, experiments: Iterable[str]) -> list[str]:
    """One line per model: the engine, method and precision that fine-tuned it and the scorer that scored it, as
    the summary table recorded them, so that a stock run's bundle and an fsdp2 run's cannot be taken for each
    other ("not recorded" where a run predates the field)."""
    with open(summary_csv, newline="") as fh:
        cells = {(r["experiment"], r["stage"], r["metric"]): r["value"] for r in csv.DictReader(fh)}

    def get(model, stage, metric):
        return cells.get((model, stage, metric)) or "not recorded"

    def scored(model):
        float8 = ", float8 linear layers" if get(model, "evaluate", "float8") == "True" else ""
        return f"scorer {get(model, 'evaluate', 'scorer')}, precision {get(model, 'evaluate', 'precision')}{float8}"

    return [f"base: not fine-tuned; {scored('base')}"] + [
        f"{n}: fine-tune engine {get(n, 'finetune', 'engine')}, method {get(n, 'finetune', 'method')}, precision"
        f" {get(n, 'finetune', 'precision')}; {scored(n)}" for n in experiments]


def readme_text(name: str, run_name: str, git_commit: str, experiments: Iterable[str], max_file_mb: float,
                arcnames: Iterable[str], ran: Iterable[str] = ()) -> str:
    """README.txt of the archive: what ran (`ran`: what_ran's lines), what is where (of what `arcnames` holds)
    and how it was produced. No time stamp, so that it stays reproducible."""
    arcnames = list(arcnames)
    ran = "".join(f"\n  {line}" for line in ran) or "\n  (no summary table)"

    def has(prefix: str) -> bool:
        return any(a.startswith(prefix) for a in arcnames)

    jobs = ("jobs/ holds the job scripts exactly as submitted" if has("scripts/run/jobs/")
            else "no jobs/: this run submitted no job scripts (it ran without a scheduler)")
    scheduler = ("logs/scheduler/ holds the scheduler's output files" if has("outputs/logs/scheduler/")
                 else "no logs/scheduler/: this run used no scheduler")
    configfiles = ("configfiles/ (the --configfile files of this run), " if has("configs/configfiles/") else "")
    return f"""Submission bundle {name}

Run: {run_name}
Workflow commit: {git_commit}
Experiments: {', '.join(experiments)}
What ran (from outputs/summary.csv):{ran}
Made by the Snakemake rule `submission` (scripts/workflow/workflow/rules/submission.smk) from this run's results.

What is where
  scripts/build/     build and setup scripts: build_venv.sh (a virtual environment from the site's modules and
                     the pinned requirements), the pins (*.txt), conda.yaml
  scripts/run/       run scripts: profiles/<name>/ (how Snakemake submits each job to the scheduler);
                     {jobs}
  scripts/workflow/  the workflow the run scripts drive: Snakefile, workflow/ (rules, rule scripts, schema,
                     report captions), src/llmhpc/ (its Python package), pyproject.toml
  configs/           config.yaml (the workflow's config), {configfiles}config.effective.yaml (what the run
                     used, every default filled in), litgpt/<experiment>.yaml (LitGPT's config of each fine-tune)
  outputs/           summary.csv (every figure with its unit and source file), env/manifest.json (hardware and
                     software), finetune/<experiment>/ (finetune.stdout, metrics.csv, summary.json),
                     evaluate/<model>/metrics.json (HellaSwag-style accuracy), logs/ (every job's log);
                     {scheduler}
  slides/deck.pdf    the interview slides
  MANIFEST           every file with its size and sha256; files where a secret was redacted are marked

Not included: model weights (*{', *'.join(WEIGHT_SUFFIXES)}) and files over {max_file_mb:g} MB are refused;
secrets (the values of HF_TOKEN and similar variables, token-like strings) are replaced by [REDACTED:<kind>].

To reproduce: check out the workflow commit above (or lay out scripts/workflow/ as the repository, with
scripts/build/ as envs/, scripts/run/profiles/ as profiles/ and configs/config.yaml as config/config.yaml),
build the environment with `bash envs/build_venv.sh VENV envs/<pins>.txt [MODULE ...]` and run
`snakemake --configfile configs/config.effective.yaml [--profile profiles/<site>]`.
The archive is byte-identical when remade from the same inputs: `sha256sum -c {name}.sha256` next to it checks it.
"""


def make(archive, checksum, manifest, config: dict, experiments: list[str], configfiles, name: str, run_name: str,
         max_file_mb: float, exclude=(), served=(), log=print, summary=None) -> None:
    """Collect, check and write the submission archive and its checksum file; a refusal exits naming every file."""
    git_commit = json.loads(Path(manifest).read_text()).get("git_commit") or "unknown"
    files = layout(experiments, configfiles=configfiles, served=served)
    try:
        members = collect(files, runtime_dirs("results"), exclude=exclude, generated={
            "configs/config.effective.yaml": yaml.safe_dump(canonical(config)).encode()})
        readme = readme_text(name=name, run_name=run_name, git_commit=git_commit, experiments=experiments,
                             max_file_mb=max_file_mb, arcnames=[m.arcname for m in members],
                             ran=what_ran(summary, experiments) if summary else ())
        members.append(Member("README.txt", data=readme.encode()))
        summary = build(members, archive, max_file_mb)
    except BundleError as exc:
        raise SystemExit(str(exc)) from None
    atomic.write_text(checksum, summary.sha256_line())
    for arcname in sorted(m.arcname for m in members):
        log("   " + arcname)
