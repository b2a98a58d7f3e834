"""Shared by the PBS tests: the shipped sites, job properties, the emulator's call log."""

import json
import time
from pathlib import Path

import yaml

from conftest import REPO, SCHEMA, default_config
from llmhpc.config import check, load_schema

SITE_SCHEMA = load_schema(SCHEMA)["properties"]["site"]




def site_of(profile: str, **overrides) -> dict:
    """The profile's site.yaml with the schema's defaults, as the workflow resolves it."""
    cfg = default_config()
    cfg["site"] = {**yaml.safe_load((REPO / f"profiles/{profile}/site.yaml").read_text()), **overrides}
    check(cfg, load_schema(SCHEMA))
    return cfg["site"]


GADI = site_of("gadi", project="ab12", storage=["gdata/ab12", "scratch/ab12"])
ASPIRE = site_of("aspire2a", project="12345678")


def finetune_props(nodes: int, gpus: int, experiment="baseline", runtime=120, mem_mb=8000, threads=2) -> dict:
    return {"type": "single", "rule": "finetune", "jobid": 7, "wildcards": {"experiment": experiment},
            "threads": threads, "resources": {"nodes": nodes, "gpus_per_node": gpus, "mem_mb": mem_mb,
                                              "runtime": runtime, "tmpdir": "/tmp"}}


def calls(home: Path, command: str) -> list[list[str]]:
    path = home / "calls.log"
    if not path.exists():
        return []
    return [c["argv"][1:] for c in map(json.loads, path.read_text().splitlines()) if c["argv"][0] == command]


def snakemake_jobscript(path: Path, props: dict, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n# properties = {json.dumps(props)}\n{body}\n")
    return path


def wait_for(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def emulated_job(home: Path, job_id: str) -> dict:
    return json.loads((home / "jobs" / f"{job_id.split('.')[0]}.json").read_text())

