"""Service units (SU), what a site charges its projects for a job: the queue's charge rate (site.su_per_hour) x the
resources the job holds (site.su_resource) x hours. NCI Gadi: rate x max(ncpus, the job's share of the node's
memory, in CPUs) x walltime used.

Before anything is queued, `-n` prints each job's estimate from what llmhpc.cluster.pbs.requested asks (its
requested walltime: an upper bound, a job is charged for the walltime it uses) and the total; after a fine-tune,
its summary records the measured cost from the stage's wall time and the resources the job held."""

from __future__ import annotations

from llmhpc.cluster import pbs
from llmhpc.cluster.site import Site

UNIT_NAMES = {"cpus": "CPUs", "gpus": "GPUs", "nodes": "nodes"}


def charged_units(held: dict, site: Site | dict) -> float:
    """Resources charged per hour for what a job holds (pbs.job_totals). cpus: Gadi's max(ncpus, memory proportion)
    for GPU jobs, where the proportion is mem x cpus_per_node / mem_per_node_gb of the GPU node the site describes;
    CPU jobs (another node type) are charged by their CPUs."""
    site = Site.of(site)
    if site.su_resource == "gpus":
        return float(held["ngpus"])
    if site.su_resource == "nodes":
        return float(held["nodes"])
    units = float(held["ncpus"])
    if held["ngpus"] and site.cpus_per_node and site.mem_per_node_gb:
        units = max(units, held["mem_mb"] / 1000 * site.cpus_per_node / site.mem_per_node_gb)
    return units


def job_cost(props: dict, site: Site | dict, hours: float | None = None) -> dict | None:
    """One job's cost: {queue, rate, units, hours, su}, su None where the site names no rate for its queue; hours
    default to the requested walltime. None where the site has no su_per_hour."""
    site = Site.of(site)
    if not site.su_per_hour:
        return None
    req = pbs.requested(props, site)
    queue = pbs.queue_for(req, site)
    units = charged_units(pbs.job_totals(req, site), site)
    hours = req["walltime_s"] / 3600 if hours is None else hours
    rate = site.su_per_hour.get(queue) if queue else None
    su = None if rate is None else round(rate * units * hours, 2)
    return {"queue": queue, "rate": rate, "units": round(units, 2), "hours": round(hours, 4), "su": su}


def describe(name: str, cost: dict, site: Site | dict) -> str:
    site = Site.of(site)
    unit = UNIT_NAMES[site.su_resource]
    if cost["su"] is None:
        return f"{name}: queue {cost['queue'] or '(default)'} has no rate in site.su_per_hour: not counted"
    return (f"{name}: {cost['queue']}, {cost['rate']:g} SU/h x {cost['units']:g} {unit} x {cost['hours']:.2f} h"
            f" = {cost['su']:g} SU")


def estimate_lines(jobs_properties: list[dict], site: Site | dict) -> list[str]:
    """A line per job (its requested walltime) and the total; one line saying why where the site has no rates."""
    site = Site.of(site)
    if not site.su_per_hour:
        return [f"site '{site.name}' has no su_per_hour: no estimate (the queues' charge rates go in its site.yaml)"]
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
    return lines


def register_dry_run_estimate(workflow, site: Site | dict) -> None:
    """In a dry run, print the estimated cost of every job that would be submitted and the total."""
    import json

    from llmhpc.cluster.dryrun import print_at_exit

    site = Site.of(site)
    print_at_exit(workflow, f"Estimated cost in service units (site '{site.name}'; requested walltime x resources"
                            f" held x the queue's rate):",
                  lambda jobs: estimate_lines([json.loads(job.properties()) for job in jobs], site))


def measured(props: dict, site: Site | dict, wall_s: float | None) -> dict:
    """What a finished job cost, for its summary: su (and su_queue, su_rate, su_units) from its wall time; empty
    where the site has no rate or the wall time is unknown."""
    if wall_s is None:
        return {}
    cost = job_cost(props, site, hours=wall_s / 3600)
    if not cost or cost["su"] is None:
        return {}
    return {"su": cost["su"], "su_queue": cost["queue"], "su_rate": cost["rate"], "su_units": cost["units"]}
