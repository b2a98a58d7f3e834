"""What Snakemake says each job does: a fine-tune names its engine (stock LitGPT or fsdp2), method and precision, an
evaluation its scorer, so that a run's log tells which engine made which number (issue 29)."""

import re

import pytest
import yaml

from conftest import copy_repo, default_config, snakemake


@pytest.mark.snakemake
def test_job_messages_name_the_engine_and_the_scorer(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    cfg = default_config()
    cfg["experiments"] = [{"name": "stock"}, {"name": "fast", "finetune": {"engine": "fsdp2"}}]
    cfg["evaluate"]["scorer"] = "fast"
    (repo / "engines.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(repo, "-n", "--configfile=engines.yaml").stdout
    assert "Fine-tuning experiment stock with the litgpt engine (full, 32-true)" in out
    assert "Fine-tuning experiment fast with the fsdp2 engine (full, 32-true)" in out
    assert "Writing the fine-tune config of experiment fast (engine fsdp2)" in out
    assert "with the fast model (the fast scorer)" in out
    finetune = [m for m in re.findall(r"^Job \d+: (.*)$", out, re.M) if "experiment " in m]
    assert len(finetune) == 4 and not any("LitGPT" in m for m in finetune), finetune
