"""`python -m llmhpc.cluster.profiles install`: cluster profiles where Snakemake looks bare profile names up."""

import os
import subprocess
import sys

import pytest

from conftest import REPO
from llmhpc.cluster import profiles


@pytest.fixture
def source(tmp_path):
    """A profiles/ folder like the repository's: the workflow profile and two cluster profiles."""
    src = tmp_path / "profiles"
    for name in ("default", "gadi", "slurm"):
        (src / name).mkdir(parents=True)
        (src / name / "config.yaml").write_text(f"# {name}\n")
    (src / "notes").mkdir()  # no config.yaml: not a profile
    return src


def test_available_skips_the_workflow_profile_and_non_profiles(source):
    assert profiles.available(source) == ["gadi", "slurm"]


def test_repository_cluster_profiles_are_offered():
    assert {"gadi", "aspire2a", "slurm"} <= set(profiles.available(REPO / "profiles"))
    assert "default" not in profiles.available(REPO / "profiles")


def test_install_links_every_cluster_profile_and_is_idempotent(source, tmp_path):
    dest = tmp_path / "config/snakemake"
    done = profiles.install(source, dest)
    assert [(n, a) for n, _, a in done] == [("gadi", "installed"), ("slurm", "installed")]
    for name in ("gadi", "slurm"):
        assert (dest / name).is_symlink() and (dest / name).resolve() == (source / name).resolve()
    assert not (dest / "default").exists()
    # A change in the repository shows through the link.
    (source / "slurm/config.yaml").write_text("jobs: 3\n")
    assert (dest / "slurm/config.yaml").read_text() == "jobs: 3\n"
    again = profiles.install(source, dest)
    assert [a for _, _, a in again] == ["up to date", "up to date"]


def test_install_refuses_to_replace_a_profile_of_the_users_own(source, tmp_path):
    dest = tmp_path / "snakemake"
    (dest / "slurm").mkdir(parents=True)
    (dest / "slurm/config.yaml").write_text("# the user's own\n")
    with pytest.raises(profiles.ProfileError, match=r"slurm exists.*--force"):
        profiles.install(source, dest)
    # Nothing half-done: gadi was not installed either, and the user's profile is intact.
    assert not (dest / "gadi").exists()
    assert (dest / "slurm/config.yaml").read_text() == "# the user's own\n"
    done = profiles.install(source, dest, ["slurm"], force=True)
    assert done[0][2] == "replaced" and (dest / "slurm").resolve() == (source / "slurm").resolve()


def test_a_link_into_another_checkout_is_kept_unless_forced_and_a_foreign_link_is_not_touched(source, tmp_path):
    """A second clone of the workflow does not silently take the names over from the first (whose runs by bare name
    would then use the second's profile and site): refused, naming the other checkout, unless --force, which says
    so loudly; a broken link (a deleted clone) is relinked; a link to some other folder of the user's stays."""
    old = tmp_path / "old-clone"
    (old / "workflow/rules").mkdir(parents=True)
    (old / "workflow/rules/common.smk").write_text("")
    (old / "profiles/slurm").mkdir(parents=True)
    (old / "profiles/slurm/config.yaml").write_text("# old\n")
    (source.parent / "workflow/rules").mkdir(parents=True)
    (source.parent / "workflow/rules/common.smk").write_text("")
    dest = tmp_path / "snakemake"
    dest.mkdir()
    (dest / "slurm").symlink_to(old / "profiles/slurm", target_is_directory=True)
    with pytest.raises(profiles.ProfileError, match=rf"links to the slurm profile of another checkout, {old}:.*--force"):
        profiles.install(source, dest)
    assert (dest / "slurm").resolve() == (old / "profiles/slurm").resolve() and not (dest / "gadi").exists()
    done = dict((n, a) for n, _, a in profiles.install(source, dest, force=True))
    assert done["slurm"] == (f"relinked AWAY FROM ANOTHER CHECKOUT, {old}: runs there by bare name now use this"
                             f" checkout's profile")
    assert (dest / "slurm").resolve() == (source / "slurm").resolve()
    (dest / "slurm").unlink()
    (dest / "slurm").symlink_to(tmp_path / "deleted-clone/profiles/slurm", target_is_directory=True)
    done = dict((n, a) for n, _, a in profiles.install(source, dest))
    assert done["slurm"].startswith("relinked (was a broken link to ") and (dest / "slurm").resolve() == \
        (source / "slurm").resolve()
    mine = tmp_path / "my-gadi"
    mine.mkdir()
    (dest / "gadi").unlink()
    (dest / "gadi").symlink_to(mine, target_is_directory=True)
    with pytest.raises(profiles.ProfileError, match=r"gadi exists"):
        profiles.install(source, dest)


def test_install_copy_and_selected_names(source, tmp_path):
    dest = tmp_path / "snakemake"
    done = profiles.install(source, dest, ["gadi"], copy=True)
    assert done == [("gadi", dest / "gadi", "installed (copy)")]
    assert (dest / "gadi").is_dir() and not (dest / "gadi").is_symlink()
    assert (dest / "gadi/config.yaml").read_text() == "# gadi\n"
    assert not (dest / "slurm").exists()


def test_unknown_profile_is_named_with_the_available_ones(source, tmp_path):
    with pytest.raises(profiles.ProfileError, match=r"no profile pbs .*available: gadi, slurm"):
        profiles.install(source, tmp_path / "snakemake", ["pbs"])


@pytest.mark.subprocess
def test_cli_installs_where_snakemake_finds_the_bare_name(source, tmp_path):
    """With XDG_CONFIG_HOME set, `install` puts the profiles where Snakemake's own lookup finds `slurm`."""
    home = tmp_path / "home"
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"))
    cli = [sys.executable, "-m", "llmhpc.cluster.profiles"]
    where = subprocess.run([*cli, "where"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(home / "xdg/snakemake")
    out = subprocess.run([*cli, "install", "--from", str(source)], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert "slurm: installed at" in out and "snakemake --profile slurm" in out
    # Snakemake's lookup of a bare name, from a folder that has no `slurm` of its own.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    lookup = "from snakemake.cli import get_profile_dir; print(get_profile_dir('slurm')[1])"
    found = subprocess.run([sys.executable, "-c", lookup], cwd=workdir, env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == str(home / "xdg/snakemake/slurm/config.yaml")
    # A second run changes nothing; a clash is refused with exit status 1 and the reason.
    assert "up to date" in subprocess.run([*cli, "install", "--from", str(source)], env=env, capture_output=True,
                                          text=True, check=True).stdout
    (home / "xdg/snakemake/gadi").unlink()
    (home / "xdg/snakemake/gadi").mkdir()
    clash = subprocess.run([*cli, "install", "--from", str(source)], env=env, capture_output=True, text=True)
    assert clash.returncode == 1 and "gadi exists" in clash.stderr
