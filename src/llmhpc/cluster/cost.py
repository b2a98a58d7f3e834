"""Service units (SU), what a site charges its projects for a job: the queue's charge rate (site.su_per_hour) x the
resources the job holds (site.su_resource) x hours. NCI Gadi: rate x max(ncpus, mem / (the queue's node memory /
its cores)) x walltime used, on every queue (normal: 4 GB a core; gpuvolta: 382 GB / 48 cores).

Before anything is queued, `-n` prints each job's estimate from what llmhpc.cluster.pbs.requested asks (its
requested walltime: an upper bound, a job is charged for the walltime it uses) and the total; a real run records the
same estimate, every job's and each experiment's, in results/jobs/cost_estimate.json before it submits anything
(ESTIMATE_FILE: the submission bundle carries it with the job scripts); after a fine-tune or an evaluation, its
summary.json or metrics.json records the measured cost (su) from the stage's wall time and the resources the job
held, beside its estimate (su_estimate).
A site or queue without a rate is "no published rate", never 0 SU."""

from __future__ import annotations

import json
import sys

from llmhpc.cluster import pbs
from llmhpc.cluster.site import Site

UNIT_NAMES = {"cpus": "CPUs", "gpus": "GPUs", "nodes": "nodes"}
ESTIMATE_FILE = "results/jobs/cost_estimate.json"
NO_RATE = "no published rate"
BASIS = "requested walltime x resources held x the queue's rate (an upper bound: a job is charged for the walltime it uses)"


def mem_per_cpu_gb(site: Site | dict, queue: str | None) -> float | None:
    """GB of memory charged as one CPU on `queue` (NCI: the node's memory / its cores): site.su_mem_per_cpu_gb's
    figure for the queue, else, for the GPU queue, the GPU node's mem_per_node_gb / cpus_per_node; None where the
    site says neither (the job is charged by its CPUs alone)."""
    site = Site.of(site)
    named = site.su_mem_per_cpu_gb or {}
    if queue in named:
        return float(named[queue])
    if queue == site.queue and site.cpus_per_node and site.mem_per_node_gb:
        return site.mem_per_node_gb / site.cpus_per_node
    return None


def charged_units(held: dict, site: Site | dict, queue: str | None = None) -> float:
    """Resources charged per hour for what a job holds (pbs.job_totals) on `queue`. cpus: Gadi's max(ncpus, memory
    proportion), the proportion being the job's memory over the GB per CPU of the queue's nodes (mem_per_cpu_gb):
    a 1-CPU job asking 25 GB on Gadi's normal queue (4 GB a core) is charged as 6.25 CPUs, a 1-GPU gpuvolta job's
    95.5 GB as 12."""
    site = Site.of(site)
    if site.su_resource == "gpus":
        return float(held["ngpus"])
    if site.su_resource == "nodes":
        return float(held["nodes"])
    units = float(held["ncpus"])
    per_cpu = mem_per_cpu_gb(site, queue if queue is not None else site.queue if held["ngpus"] else site.cpu_queue)
    if per_cpu:
        units = max(units, held["mem_mb"] / 1000 / per_cpu)
    return units


def job_cost(props: dict, site: Site | dict, hours: float | None = None) -> dict | None:
    """One job's cost: {queue, rate, units, hours, su}, su None where the site names no rate for its queue; hours
    default to the requested walltime. None where the site has no su_per_hour."""
    site = Site.of(site)
    if not site.su_per_hour:
        return None
    req = pbs.requested(props, site)
    queue = pbs.queue_for(req, site)
    held = pbs.job_totals(req, site)
    units = charged_units(held, site, queue)
    hours = req["walltime_s"] / 3600 if hours is None else hours
    rate = site.su_per_hour.get(queue) if queue else None
    su = None if rate is None else round(rate * units * hours, 2)
    out = {"queue": queue, "rate": rate, "units": round(units, 2), "hours": round(hours, 4), "su": su}
    if site.su_resource == "cpus" and units > held["ncpus"]:  # charged on its memory (NCI's memory proportion)
        out["by_memory"] = (f"{held['ncpus']:g} CPU{'s' if held['ncpus'] != 1 else ''} asked;"
                            f" {held['mem_mb'] / 1000:g} GB at {mem_per_cpu_gb(site, queue):.3g} GB a CPU")
    return out


def describe(name: str, cost: dict, site: Site | dict) -> str:
    site = Site.of(site)
    unit = UNIT_NAMES[site.su_resource]
    if cost["su"] is None:
        return f"{name}: queue {cost['queue'] or '(default)'}: {NO_RATE} (not in site.su_per_hour), not counted"
    units = f"{cost['units']:g} {unit}"
    if cost.get("by_memory"):  # the CPUs its memory is worth, not the CPUs it asked for
        units += f"' worth of memory ({cost['by_memory']})"
    return (f"{name}: {cost['queue']}, {cost['rate']:g} SU/h x {units} x {cost['hours']:.2f} h"
            f" = {cost['su']:g} SU")


def estimate_lines(jobs_properties: list[dict], site: Site | dict) -> list[str]:
    """A line per job (its requested walltime) and the total; one line saying why where the site has no rates."""
    site = Site.of(site)
    if not site.su_per_hour:
        return [no_rates(site)]
    lines, total, missing = [], 0.0, 0
    for props in jobs_properties:
        cost = job_cost(props, site)
        lines.append(describe(pbs.job_name(props), cost, site))
        if cost["su"] is None:
            missing += 1
        else:
            total += cost["su"]
    note = f"; {missing} job(s) without a rate not counted" if missing else ""
    lines.append(f"total: {total:g} SU at most (a job is charged for the walltime it uses){note}")
    lines.append(f"recorded by a real run in {ESTIMATE_FILE}")
    return lines


def no_rates(site: Site) -> str:
    return (f"site '{site.name}': {NO_RATE} (site.su_per_hour is null): no estimate; the queues' charge rates go in"
            f" its site.yaml")


def measured(props: dict, site: Site | dict, wall_s: float | None) -> dict:
    """What a finished job cost, for its summary: su from its wall time beside su_estimate from its requested
    walltime (the figure the run's estimate recorded for it), with su_queue, su_rate, su_units (how many of
    su_resource were charged per hour) and su_resource; empty where the site or the job's queue has no rate, su left
    out where the wall time is unknown."""
    estimate = job_cost(props, site)
    if not estimate or estimate["su"] is None:
        return {}
    out = {"su_estimate": estimate["su"], "su_queue": estimate["queue"], "su_rate": estimate["rate"],
           "su_units": estimate["units"], "su_resource": Site.of(site).su_resource}
    if wall_s is not None:
        out["su"] = job_cost(props, site, hours=wall_s / 3600)["su"]
    return out


def experiment_of(props: dict) -> str | None:
    """The experiment a job belongs to: its fine-tune, evaluation or serve check; None for shared jobs (the base
    model's conversion and evaluation, downloads)."""
    wildcards = props.get("wildcards") or {}
    name = wildcards.get("experiment") or wildcards.get("model")
    return None if name in (None, "base") else str(name)


def estimate_record(jobs: list[tuple[dict, bool]], site: Site | dict) -> dict:
    """The run's estimate as ESTIMATE_FILE records it, from (job properties, whether this invocation runs it) of
    every job the scheduler gets: each job's cost, each experiment's sum, the shared jobs', the run's total and the
    part this invocation submits. Jobs of a queue without a rate are listed under not_counted, never as 0 SU."""
    site = Site.of(site)
    record = {"site": site.name, "basis": BASIS, "su_resource": site.su_resource, "su_per_hour": site.su_per_hour}
    if not site.su_per_hour:
        return {**record, "note": no_rates(site), "total_su": None, "experiments": {},
                "jobs": [{"job": pbs.job_name(p), "experiment": experiment_of(p), "runs": runs, "su": None}
                         for p, runs in jobs]}
    rows, experiments, not_counted = [], {}, []
    shared = total = to_run = 0.0
    for props, runs in jobs:
        cost, name, experiment = job_cost(props, site), pbs.job_name(props), experiment_of(props)
        rows.append({"job": name, "experiment": experiment, "runs": runs, **cost})
        if experiment is not None:
            experiments.setdefault(experiment, {"su": 0.0, "jobs": []})["jobs"].append(name)
        if cost["su"] is None:
            not_counted.append(f"{name}: queue {cost['queue'] or '(default)'}: {NO_RATE}")
            continue
        total += cost["su"]
        to_run += cost["su"] if runs else 0.0
        if experiment is None:
            shared += cost["su"]
        else:
            experiments[experiment]["su"] += cost["su"]
    for entry in experiments.values():
        entry["su"] = round(entry["su"], 2)
    return {**record, "jobs": rows, "experiments": experiments, "shared_su": round(shared, 2),
            "total_su": round(total, 2), "to_run_su": round(to_run, 2), "not_counted": not_counted}


def register_run_estimate(workflow, site: Site | dict, path: str = ESTIMATE_FILE) -> None:
    """At the start of a real run (Snakemake's onstart: never in a dry run, nor when there is nothing to do), write
    the estimate of every job the scheduler gets to `path`, atomically, before anything is submitted. A failure to
    record it is reported and does not stop the run."""
    from llmhpc import atomic

    site = Site.of(site)
    previous = getattr(workflow, "_onstart", None)

    def record(log=None):
        try:
            dag, local = workflow.dag, getattr(workflow, "_localrules", set())  # as dryrun.jobs_to_submit
            submitted = sorted((job for job in dag.jobs if job.rule.name not in local and not job.rule.norun),
                               key=lambda job: job.jobid)  # finished jobs too: the whole run's estimate
            jobs = [(json.loads(job.properties()), bool(dag.needrun(job))) for job in submitted]
            data = estimate_record(jobs, site)
            atomic.write_json(path, data)
            total = "no published rate" if data["total_su"] is None else f"{data['total_su']:g} SU at most"
            print(f"Estimated cost of this run's jobs (site '{site.name}'): {total}; recorded in {path}",
                  file=sys.stderr)
        except Exception as exc:  # the record is an account, not a gate: the run goes on
            print(f"cost estimate not recorded in {path}: {exc}", file=sys.stderr)
        if previous is not None:
            previous(log)

    workflow.onstart(record)
