"""Make `snakemake --profile gadi` (aspire2a, slurm) work by bare name.

Snakemake looks a bare profile name up in the current directory, then in the user's and the site's config
folders (`~/.config/snakemake` or `$XDG_CONFIG_HOME/snakemake` on Linux), never in the workflow's `profiles/`.
`install` links each of the repository's cluster profiles into the user's folder, so that the name resolves
from anywhere; a link (not a copy) means that `git pull` updates the installed profiles too. Paths such as
`--profile profiles/gadi` keep working without it.

    python -m llmhpc.cluster.profiles install            # every cluster profile in profiles/
    python -m llmhpc.cluster.profiles install gadi       # only this one
    python -m llmhpc.cluster.profiles where              # the folder Snakemake searches
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

# Loaded automatically as the workflow profile; installing it as a global profile would apply the laptop's
# settings to every other workflow of the user.
WORKFLOW_PROFILE = "default"
PROFILE_FILES = ("config.yaml", "profile.yaml")


class ProfileError(Exception):
    pass


def user_profile_dir() -> Path:
    """The user's folder in which Snakemake looks up profile names (the same rule Snakemake itself uses)."""
    try:
        from snakemake.common import get_appdirs
    except ImportError:  # not in the workflow's environment: the same platformdirs call Snakemake makes
        from platformdirs import AppDirs

        return Path(AppDirs("snakemake", "snakemake").user_config_dir)
    # Snakemake caches its AppDirs object; its folder follows XDG_CONFIG_HOME/HOME as read at first use.
    return Path(get_appdirs().user_config_dir)


def repo_profiles_dir() -> Path:
    """`profiles/` of the checkout this package is in (src/llmhpc/ -> repository root), else of the cwd."""
    for candidate in (Path(__file__).resolve().parents[3] / "profiles", Path.cwd() / "profiles"):
        if candidate.is_dir():
            return candidate
    raise ProfileError("no profiles/ folder found next to the llmhpc package or in the current directory; "
                       "run this from the repository root or pass --from")


def available(source: Path) -> list[str]:
    """Cluster profiles in `source`: folders with a config.yaml (or profile.yaml), the workflow profile aside."""
    return sorted(p.name for p in source.iterdir()
                  if p.is_dir() and p.name != WORKFLOW_PROFILE and any((p / f).is_file() for f in PROFILE_FILES))


def is_checkout_profile(link: Path, name: str) -> bool:
    """Whether a link points at `profiles/<name>` of a checkout of this workflow (not a user's own profile)."""
    target = link.resolve()
    return (target.parent.name == "profiles" and target.name == name
            and (target.parent.parent / "workflow/rules/common.smk").is_file())


def install(source: Path, dest: Path, names: list[str] | None = None, *, copy: bool = False,
            force: bool = False) -> list[tuple[str, Path, str]]:
    """Link (or copy) profiles from `source` into `dest`; returns (name, installed path, what was done).

    An existing entry that is not already this profile is left alone unless `force`: it may be the user's own
    profile of the same name, or another checkout's, whose runs by bare name would silently take this checkout's
    profile (and so its site.yaml) after a relink. A link whose target is gone (a deleted clone) is relinked.
    """
    source = source.resolve()
    known = available(source)
    names = names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ProfileError(f"no profile {', '.join(unknown)} in {source} (available: {', '.join(known)})")
    # Check every target before changing any, so a refusal leaves nothing half-installed.
    plan = []
    for name in names:
        src, target = source / name, dest / name
        if target.is_symlink() and target.resolve() == src and not copy:
            plan.append((name, src, target, "up to date"))
        elif target.is_symlink() and not target.exists():
            plan.append((name, src, target, f"relinked (was a broken link to {target.readlink()})"))
        elif target.is_symlink() and is_checkout_profile(target, name) and not copy:
            other = target.resolve().parent.parent
            if not force:
                raise ProfileError(f"{target} links to the {name} profile of another checkout, {other}: relinking it"
                                   f" here would make every `snakemake --profile {name}` run there use this checkout's"
                                   f" profile. Use --profile profiles/{name} (no install needed), or pass --force to"
                                   f" take the name over from {other}")
            plan.append((name, src, target, f"relinked AWAY FROM ANOTHER CHECKOUT, {other}: runs there by bare name"
                                            f" now use this checkout's profile"))
        elif target.exists() or target.is_symlink():
            if not force:
                raise ProfileError(f"{target} exists and is not a link to {src}: it may be a profile of your own. "
                                   "Move it away, or pass --force to replace it")
            plan.append((name, src, target, "replaced"))
        else:
            plan.append((name, src, target, "installed"))
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name, src, target, action in plan:
        if action == "replaced" or action.startswith("relinked"):
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        if action != "up to date":
            if copy:
                shutil.copytree(src, target, symlinks=True)
            else:
                target.symlink_to(src, target_is_directory=True)
        done.append((name, target, action + (" (copy)" if copy and action != "up to date" else "")))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmhpc.cluster.profiles", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="link the repository's cluster profiles where Snakemake finds them")
    inst.add_argument("names", nargs="*", help="profiles to install (default: all but the workflow's own)")
    inst.add_argument("--from", dest="source", type=Path, help="profiles folder (default: the repository's)")
    inst.add_argument("--dest", type=Path, help="target folder (default: Snakemake's user config folder)")
    inst.add_argument("--copy", action="store_true", help="copy instead of linking (e.g. to edit a site's copy)")
    inst.add_argument("--force", action="store_true", help="replace existing profiles of the same names")
    sub.add_parser("where", help="print the folder Snakemake searches for profile names")
    args = parser.parse_args(argv)
    try:
        if args.command == "where":
            print(user_profile_dir())
            return 0
        dest = args.dest or user_profile_dir()
        for name, target, action in install(args.source or repo_profiles_dir(), dest, args.names,
                                            copy=args.copy, force=args.force):
            print(f"{name}: {action} at {target} (use: snakemake --profile {name})")
            if "ANOTHER CHECKOUT" in action:
                print(f"warning: {name}: {action}", file=sys.stderr)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
