"""The site: from the cluster profile's site.yaml, overridden by config keys, handed to every job."""


import pytest

from conftest import REPO
from llmhpc.cluster import site as sites
from llmhpc.config import ConfigError
from pbs_helpers import SITE_SCHEMA


def test_site_comes_from_the_profile_and_config_keys_override_it(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = {"site": {"project": "xy99"}}
    source = sites.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--profile", "profiles/gadi"], environ={})
    assert source.endswith("profiles/gadi/site.yaml")
    assert cfg["site"]["name"] == "gadi" and cfg["site"]["project"] == "xy99" and cfg["site"]["queue"] == "gpuvolta"
    cfg = {}
    sites.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--profile=profiles/aspire2a"], environ={})
    assert cfg["site"]["name"] == "aspire2a"
    cfg = {}
    sites.apply_site(cfg, SITE_SCHEMA, argv=["snakemake"], environ={"SNAKEMAKE_PROFILE": "profiles/gadi"})
    assert cfg["site"]["name"] == "gadi"
    cfg = {}  # the default workflow profile has no site: the local default
    assert sites.apply_site(cfg, SITE_SCHEMA, argv=["snakemake"], environ={}) == "config"
    assert cfg["site"] == {}


def test_jobs_get_the_site_from_the_environment():
    site = {"name": "gadi", "scheduler": "pbs", "project": "ab12"}
    env = {}
    sites.export_site(site, env)
    cfg = {"site": {"project": "ab12"}}
    assert sites.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--mode", "remote"], environ=env) == "$LLMHPC_SITE"
    assert cfg["site"] == site


def test_bad_site_file_is_refused_naming_the_file(tmp_path):
    profile = tmp_path / "myprofile"
    profile.mkdir()
    (profile / "config.yaml").write_text("jobs: 1\n")
    (profile / "site.yaml").write_text("name: x\nsheduler: pbs\ngpus_per_node: four\n")
    with pytest.raises(ConfigError) as err:
        sites.apply_site({}, SITE_SCHEMA, argv=["snakemake", "--profile", str(profile)], environ={})
    text = str(err.value)
    assert f"site file {profile / 'site.yaml'} refused" in text
    assert "config key 'site.sheduler': unknown key (did you mean 'scheduler'?)" in text
    assert "config key 'site.gpus_per_node': expected a value of type integer, got 'four'" in text


def test_a_bare_profile_name_takes_this_checkouts_site(tmp_path, monkeypatch):
    """An installed profile that links into another clone does not silently give this run that clone's site."""
    other, here = tmp_path / "other-clone/profiles/gadi", tmp_path / "this-clone/profiles/gadi"
    for d, project in ((other, "xx99"), (here, "ab12")):
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("cores: 1\n")
        (d / "site.yaml").write_text(f"name: gadi\nscheduler: pbs\nproject: {project}\n")
    xdg = tmp_path / "config/snakemake"
    xdg.mkdir(parents=True)
    (xdg / "gadi").symlink_to(other)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    said = []
    found = sites.profile_site_file(["snakemake", "--profile", "gadi"], {}, cwd=tmp_path / "this-clone",
                                    warn=said.append)
    assert found == (here / "site.yaml").resolve()
    assert len(said) == 1 and str(other) in said[0] and "this checkout" in said[0]
    # given as a path, the profile is what it names, with no warning
    said.clear()
    assert sites.profile_site_file(["snakemake", "--profile", str(other)], {}, cwd=tmp_path / "this-clone",
                                   warn=said.append) == (other / "site.yaml").resolve()
    assert not said


def test_typed_site_has_the_schemas_keys_and_defaults():
    """Site mirrors the schema's `site` section key for key (lists read as tuples), so a key added to one and not
    the other fails here rather than in a job."""
    import dataclasses

    fields = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
              for f in dataclasses.fields(sites.Site)}
    schema = {key: spec.get("default") for key, spec in SITE_SCHEMA["properties"].items()}
    assert set(fields) == set(schema)
    for key, default in schema.items():
        assert fields[key] == (tuple(default) if isinstance(default, list) else default), key


def test_typed_site_from_a_site_file_round_trips_through_the_job_environment():
    import yaml

    mapping = yaml.safe_load((REPO / "profiles/gadi/site.yaml").read_text())
    site = sites.Site.of(mapping)
    assert site.storage == () and site.modules == tuple(mapping["modules"]) and site.gpus_per_node == 4
    assert sites.Site.of(sites.load_site(sites.dump_site(site))) == site
    with pytest.raises(ValueError, match="unknown key.*gpus_per_nod"):
        sites.Site.of({"gpus_per_nod": 4})
