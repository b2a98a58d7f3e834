"""Service units: each job's estimated cost from what it asks (pbs.requested), the dry run's total, and the measured
cost a finished fine-tune records. Gadi's figures follow NCI's Job Costs page (rate x max(ncpus, memory
proportion) x hours)."""

import pytest

from conftest import default_config
from llmhpc.cluster import cost
from llmhpc.config import ConfigError, check, load_schema
from pbs_helpers import ASPIRE, GADI, SCHEMA, finetune_props, site_of

CONVERT = {"type": "single", "rule": "convert", "jobid": 3, "wildcards": {}, "threads": 1,
           "resources": {"mem_mb": 8000, "runtime": 60}}
DOWNLOAD = {"type": "single", "rule": "download", "jobid": 1, "wildcards": {}, "threads": 1,
            "resources": {"mem_mb": 4000, "runtime": 30, "internet": 1}}
ASPIRE_RATED = {**ASPIRE, "su_per_hour": {"normal": 10}, "su_resource": "gpus"}


@pytest.mark.parametrize("props, site, queue, units, su", [
    # 1 GPU: 12 CPUs and a quarter of the node's 382 GB (= 12 CPUs' worth), 2 h at 3 SU/h
    (finetune_props(1, 1), GADI, "gpuvolta", 12, 72),
    (finetune_props(1, 4), GADI, "gpuvolta", 48, 288),  # a whole node
    (finetune_props(2, 2), GADI, "gpuvolta", 96, 576),  # two nodes are whole nodes on Gadi
    # 190 GB with 1 GPU: charged on memory, 190 x 48 / 382 = 23.87 CPUs' worth
    (finetune_props(1, 1, mem_mb=190000), GADI, "gpuvolta", 23.87, 143.25),
    (CONVERT, GADI, "normal", 1, 2),  # CPU job, 1 h at 2 SU/h
    (DOWNLOAD, GADI, "copyq", 1, None),  # no copyq rate in the site: not costed
    (finetune_props(2, 4), ASPIRE_RATED, "normal", 8, 160),  # GPU-hours: 8 GPUs x 2 h x 10
])
def test_estimated_cost_of_a_job_from_its_request(props, site, queue, units, su):
    got = cost.job_cost(props, site)
    assert (got["queue"], got["units"], got["su"]) == (queue, units, su)


def test_a_site_without_rates_costs_nothing_and_says_so():
    assert cost.job_cost(finetune_props(1, 1), ASPIRE) is None
    assert cost.estimate_lines([finetune_props(1, 1)], ASPIRE) == [
        "site 'aspire2a' has no su_per_hour: no estimate (the queues' charge rates go in its site.yaml)"]
    assert cost.measured(finetune_props(1, 1), ASPIRE, 3600) == {}


def test_dry_run_lines_per_job_and_total():
    lines = cost.estimate_lines([finetune_props(1, 1), finetune_props(1, 4, experiment="big"), CONVERT, DOWNLOAD],
                                GADI)
    assert lines == [
        "finetune.baseline: gpuvolta, 3 SU/h x 12 CPUs x 2.00 h = 72 SU",
        "finetune.big: gpuvolta, 3 SU/h x 48 CPUs x 2.00 h = 288 SU",
        "convert: normal, 2 SU/h x 1 CPUs x 1.00 h = 2 SU",
        "download: queue copyq has no rate in site.su_per_hour: not counted",
        "total: 362 SU at most (a job is charged for the walltime it uses); 1 job(s) without a rate not counted",
    ]


def test_measured_cost_of_a_finished_finetune_from_its_wall_time():
    assert cost.measured(finetune_props(1, 1), GADI, 1800) == {
        "su": 18.0, "su_queue": "gpuvolta", "su_rate": 3, "su_units": 12.0}
    assert cost.measured(finetune_props(1, 1), GADI, None) == {}


def test_shipped_gadi_rates_and_refused_rates():
    assert site_of("gadi")["su_per_hour"] == {"gpuvolta": 3, "normal": 2, "express": 6}
    assert site_of("aspire2a")["su_per_hour"] is None
    cfg = default_config()
    cfg["site"] = {"su_per_hour": {"gpuvolta": "three"}}
    with pytest.raises(ConfigError, match="su_per_hour"):
        check(cfg, load_schema(SCHEMA))
