"""Service units: each job's estimated cost from what it asks (pbs.requested), the dry run's total, the estimate a
real run records before it submits (results/jobs/cost_estimate.json), and the measured cost a finished fine-tune
records beside its estimate. Gadi's figures follow NCI's Job Costs page (rate x max(ncpus, memory proportion) x
hours); a site or queue without a rate says "no published rate", never 0 SU."""

import json

import pytest
import yaml

from conftest import REPO, default_config
from llmhpc.cluster import cost, pbs
from llmhpc.config import ConfigError, check, load_schema
from pbs_helpers import ASPIRE, GADI, SCHEMA, finetune_props, site_of

# 4 GB: one core's share of a Gadi normal-queue node (48 cores, 192 GB), so charged as its one CPU
CONVERT = {"type": "single", "rule": "convert", "jobid": 3, "wildcards": {}, "threads": 1,
           "resources": {"mem_mb": 4000, "runtime": 60}}
DOWNLOAD = {"type": "single", "rule": "download", "jobid": 1, "wildcards": {}, "threads": 1,
            "resources": {"mem_mb": 4000, "runtime": 30, "internet": 1}}
def convert_props(mem_mb: int) -> dict:
    return {**CONVERT, "resources": {"mem_mb": mem_mb, "runtime": 60}}


ASPIRE_RATED = {**ASPIRE, "su_per_hour": {"normal": 10}, "su_resource": "gpus"}


@pytest.mark.parametrize("props, site, queue, units, su", [
    # 1 GPU: 12 CPUs and a quarter of the node's 382 GB (= 12 CPUs' worth), 2 h at 3 SU/h
    (finetune_props(1, 1), GADI, "gpuvolta", 12, 72),
    (finetune_props(1, 4), GADI, "gpuvolta", 48, 288),  # a whole node
    (finetune_props(2, 2), GADI, "gpuvolta", 96, 576),  # two nodes are whole nodes on Gadi
    # 190 GB with 1 GPU: charged on memory, 190 x 48 / 382 = 23.87 CPUs' worth
    (finetune_props(1, 1, mem_mb=190000), GADI, "gpuvolta", 23.87, 143.25),
    (CONVERT, GADI, "normal", 1, 2),  # CPU job, 1 h at 2 SU/h
    # NCI charges a CPU job on its memory too: 25 GB on normal (4 GB a core) is 6.25 cores' worth, 94 GB 23.5
    (convert_props(25000), GADI, "normal", 6.25, 12.5),
    (convert_props(94000), GADI, "normal", 23.5, 47),
    (convert_props(25000), {**GADI, "su_mem_per_cpu_gb": None}, "normal", 1, 2),  # no figure: by its CPUs
    (DOWNLOAD, GADI, "copyq", 1, None),  # no copyq rate in the site: not costed
    (finetune_props(2, 4), ASPIRE_RATED, "normal", 8, 160),  # GPU-hours: 8 GPUs x 2 h x 10
])
def test_estimated_cost_of_a_job_from_its_request(props, site, queue, units, su):
    got = cost.job_cost(props, site)
    assert (got["queue"], got["units"], got["su"]) == (queue, units, su)


def test_a_site_without_rates_costs_nothing_and_says_so():
    assert cost.job_cost(finetune_props(1, 1), ASPIRE) is None
    assert cost.estimate_lines([finetune_props(1, 1)], ASPIRE) == [
        "site 'aspire2a': no published rate (site.su_per_hour is null): no estimate; the queues' charge rates go in"
        " its site.yaml"]
    assert cost.measured(finetune_props(1, 1), ASPIRE, 3600) == {}


def test_dry_run_lines_per_job_and_total():
    lines = cost.estimate_lines([finetune_props(1, 1), finetune_props(1, 4, experiment="big"), CONVERT, DOWNLOAD],
                                GADI)
    assert lines == [
        "finetune.baseline: gpuvolta, 3 SU/h x 12 CPUs x 2.00 h = 72 SU",
        "finetune.big: gpuvolta, 3 SU/h x 48 CPUs x 2.00 h = 288 SU",
        "convert: normal, 2 SU/h x 1 CPUs x 1.00 h = 2 SU",
        "download: queue copyq: no published rate (not in site.su_per_hour), not counted",
        "total: 362 SU at most (a job is charged for the walltime it uses); 1 job(s) without a rate not counted",
        "recorded by a real run in results/jobs/cost_estimate.json",
    ]


def test_measured_cost_of_a_finished_finetune_from_its_wall_time_beside_its_estimate():
    estimate = {"su_estimate": 72.0, "su_queue": "gpuvolta", "su_rate": 3, "su_units": 12.0, "su_resource": "cpus"}
    assert cost.measured(finetune_props(1, 1), GADI, 1800) == {**estimate, "su": 18.0}
    assert cost.measured(finetune_props(1, 1), GADI, None) == estimate  # wall time unknown: no measured figure
    assert cost.measured(DOWNLOAD, GADI, 1800) == {}  # copyq: no published rate, no figure at all


def test_shipped_gadi_rates_and_refused_rates():
    assert site_of("gadi")["su_per_hour"] == {"gpuvolta": 3, "normal": 2, "express": 6}
    assert site_of("aspire2a")["su_per_hour"] is None  # no published rate found: not a guessed one
    assert "copyq" not in site_of("gadi")["su_per_hour"]
    cfg = default_config()
    cfg["site"] = {"su_per_hour": {"gpuvolta": "three"}}
    with pytest.raises(ConfigError, match="su_per_hour"):
        check(cfg, load_schema(SCHEMA))


EVALUATE_MBS16 = {"type": "single", "rule": "evaluate", "jobid": 9, "wildcards": {"model": "mbs16"}, "threads": 1,
                  "resources": {"nodes": 1, "gpus_per_node": 1, "mem_mb": 8000, "runtime": 30}}
EVALUATE_BASE = {**EVALUATE_MBS16, "jobid": 8, "wildcards": {"model": "base"}}
RUN_JOBS = [(CONVERT, False), (DOWNLOAD, False), (finetune_props(1, 1), True),
            (finetune_props(1, 4, experiment="mbs16"), True), (EVALUATE_BASE, True), (EVALUATE_MBS16, True)]


def test_recorded_estimate_per_job_per_experiment_and_in_all():
    record = cost.estimate_record(RUN_JOBS, GADI)
    assert record["site"] == "gadi" and record["su_per_hour"] == GADI["su_per_hour"]
    su = {job["job"]: job["su"] for job in record["jobs"]}
    assert su == {"convert": 2, "download": None, "finetune.baseline": 72, "finetune.mbs16": 288,
                  "evaluate.base": 18, "evaluate.mbs16": 18}  # an evaluation: 12 CPUs x 0.5 h x 3
    assert record["experiments"] == {"baseline": {"su": 72, "jobs": ["finetune.baseline"]},
                                     "mbs16": {"su": 306, "jobs": ["finetune.mbs16", "evaluate.mbs16"]}}
    assert (record["shared_su"], record["total_su"]) == (20, 398)  # convert and the base model's evaluation
    assert record["to_run_su"] == 396  # convert had run already: this invocation submits the rest
    assert record["not_counted"] == ["download: queue copyq: no published rate"]  # left out, not 0 SU


def test_the_estimate_a_finetune_summary_carries_is_the_one_the_run_recorded():
    record = cost.estimate_record(RUN_JOBS, GADI)
    recorded = next(job for job in record["jobs"] if job["job"] == "finetune.mbs16")
    summary = cost.measured(finetune_props(1, 4, experiment="mbs16"), GADI, 3600)
    assert summary["su_estimate"] == recorded["su"] == 288 and summary["su"] == 144


def test_recorded_estimate_of_a_site_without_rates_says_no_published_rate():
    record = cost.estimate_record(RUN_JOBS, ASPIRE)
    assert record["total_su"] is None and record["experiments"] == {}
    assert "no published rate" in record["note"]
    assert {job["su"] for job in record["jobs"]} == {None}


class FakeRule:
    def __init__(self, name, norun=False):
        self.name, self.norun = name, norun


class FakeJob:
    def __init__(self, props, jobid):
        self.props, self.jobid, self.rule = props, jobid, FakeRule(props["rule"])

    def properties(self):
        return json.dumps(self.props)


class FakeDag:
    def __init__(self, jobs, needrun):
        self.jobs, self._needrun = jobs, needrun

    def needrun(self, job):
        return job.jobid in self._needrun


class FakeWorkflow:
    """What register_run_estimate uses of Snakemake's workflow: the DAG, the local rules and onstart."""

    def __init__(self, dag, localrules=()):
        self.dag, self._localrules, self.started = dag, set(localrules), []
        self._onstart = lambda log: self.started.append(log)

    def onstart(self, func):
        self._onstart = func


def test_a_real_run_records_the_estimate_at_its_start(tmp_path, capsys):
    jobs = [FakeJob(finetune_props(1, 1), 2), FakeJob(CONVERT, 1), FakeJob({**CONVERT, "rule": "summary"}, 3)]
    workflow = FakeWorkflow(FakeDag(jobs, needrun={2}), localrules=["summary"])
    path = tmp_path / "results/jobs/cost_estimate.json"
    cost.register_run_estimate(workflow, GADI, path=str(path))
    assert not path.exists()  # registered only: Snakemake calls it when a real run starts (never with -n)
    workflow._onstart("snakemake.log")
    record = json.loads(path.read_text())
    assert [(j["job"], j["runs"], j["su"]) for j in record["jobs"]] == [("convert", False, 2),
                                                                         ("finetune.baseline", True, 72)]
    assert (record["total_su"], record["to_run_su"]) == (74, 72)  # the local summary rule is not charged
    assert workflow.started == ["snakemake.log"]  # an onstart handler registered before still runs
    assert f"74 SU at most; recorded in {path}" in capsys.readouterr().err
    assert not list(path.parent.glob(".*"))  # written whole (llmhpc.atomic), no temporary left


def test_a_run_whose_estimate_cannot_be_made_goes_on_and_says_so(tmp_path, capsys):
    broken = FakeJob({**CONVERT, "resources": {"runtime": "soon"}}, 1)
    workflow = FakeWorkflow(FakeDag([broken], needrun={1}))
    path = tmp_path / "cost_estimate.json"
    cost.register_run_estimate(workflow, GADI, path=str(path))
    workflow._onstart(None)
    assert not path.exists() and f"cost estimate not recorded in {path}" in capsys.readouterr().err
    assert workflow.started == [None]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "config/workloads").glob("*.yaml")))
def test_presets_ask_gadi_for_their_gpus_share_of_a_node(preset):
    """A preset describes the workload, not the node: under Gadi's profile a 1-GPU job holds 12 cores and 95.5 GB
    (36 SU/h), not the whole node a preset's `site: {gpus_per_node: 1}` made of it (48 cores, 382 GB, 4x the SU)."""
    own = yaml.safe_load((REPO / f"config/workloads/{preset}.yaml").read_text()).get("site") or {}
    site = site_of("gadi", project="ab12", **own)  # the profile's site.yaml under the preset's keys, as apply_site
    held = pbs.job_totals(pbs.requested(finetune_props(1, 1), site), site)
    assert (held["ngpus"], held["ncpus"], held["mem_mb"]) == (1, 12, 95500)
    assert cost.job_cost(finetune_props(1, 1, runtime=60), site)["su"] == 36


def test_a_job_charged_on_its_memory_says_so_in_its_dry_run_line():
    """A 1-CPU convert asking 25 GB is charged as 6.25 CPUs on Gadi's normal queue: its line says that the CPUs are
    its memory's worth, not what it asked ("x 6.25 CPUs" read as a request the job never made)."""
    lines = cost.estimate_lines([convert_props(25000), finetune_props(1, 1, mem_mb=190000), CONVERT], GADI)
    assert lines[:3] == [
        "convert: normal, 2 SU/h x 6.25 CPUs' worth of memory (1 CPU asked; 25 GB at 4 GB a CPU) x 1.00 h = 12.5 SU",
        "finetune.baseline: gpuvolta, 3 SU/h x 23.87 CPUs' worth of memory (12 CPUs asked; 190 GB at 7.96 GB a CPU)"
        " x 2.00 h = 143.25 SU",
        "convert: normal, 2 SU/h x 1 CPUs x 1.00 h = 2 SU",
    ], lines
