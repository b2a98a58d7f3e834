"""The site: read from the cluster profile's site.yaml (the profile named on the command line or in
$SNAKEMAKE_PROFILE), overridden by config keys, and handed to every job and PBS command through $LLMHPC_SITE."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

SITE_ENV = "LLMHPC_SITE"


def dump_site(site: dict) -> str:
    return json.dumps(site, sort_keys=True, separators=(",", ":"))


def load_site(text: str) -> dict:
    return json.loads(text)



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

    from llmhpc.config import ConfigError, _validate

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"site file {path}: expected a mapping of site keys, got {type(data).__name__}")
    problems = _validate(data, site_schema, prefix=("site",))
    if problems:
        raise ConfigError(f"site file {path} refused:\n  " + "\n  ".join(problems))
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
