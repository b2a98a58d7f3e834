"""PBS Pro profiles (Gadi, Aspire 2A), site, preflight and multi-node launch.

PBS Pro cannot be installed here: the qsub/qstat/qdel on PATH are tests/pbs_emulator (an emulator of PBS Pro's
documented command-line behaviour). Everything else is real: Snakemake with the cluster-generic executor, the
profiles as shipped, LitGPT, torchrun.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SCHEMA, copy_repo, default_config, snakemake
from llmhpc.cluster import launch, pbs, pbs_status, preflight
from llmhpc.config import ConfigError, check, load_schema

EMULATOR = REPO / "tests/pbs_emulator"
SITE_SCHEMA = load_schema(SCHEMA)["properties"]["site"]
CONSOLE_SCRIPTS = ("llmhpc-pbs-submit", "llmhpc-pbs-status", "llmhpc-pbs-cancel")


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


# ------------------------------------------------------------------------------------------- qsub rendering

def test_gadi_one_gpu_finetune_gets_its_share_of_a_node():
    options = pbs.qsub_options(finetune_props(1, 1), GADI)
    assert options == ["-N", "finetune.baseline", "-P", "ab12", "-q", "gpuvolta",
                       "-l", "ngpus=1,ncpus=12,mem=95500MB,jobfs=100GB,walltime=02:00:00,"
                             "storage=gdata/ab12+scratch/ab12", "-j", "n"]


def test_gadi_one_node_of_four_gpus_is_a_whole_node():
    options = pbs.qsub_options(finetune_props(1, 4), GADI)
    assert options[options.index("-l") + 1] == \
        "ngpus=4,ncpus=48,mem=382GB,jobfs=100GB,walltime=02:00:00,storage=gdata/ab12+scratch/ab12"


def test_gadi_two_node_finetune_takes_whole_nodes():
    four = pbs.qsub_options(finetune_props(2, 4), GADI)
    assert four[four.index("-l") + 1] == \
        "ngpus=8,ncpus=96,mem=764GB,jobfs=200GB,walltime=02:00:00,storage=gdata/ab12+scratch/ab12"
    # 2 GPUs on each of 2 nodes: Gadi allocates multi-node GPU jobs in whole nodes (ngpus a multiple of 4)
    two = pbs.qsub_options(finetune_props(2, 2), GADI)
    assert two[two.index("-l") + 1].startswith("ngpus=8,ncpus=96,mem=764GB,")


def test_aspire2a_select_chunks_one_per_node():
    single = pbs.qsub_options(finetune_props(1, 4), ASPIRE)
    assert single == ["-N", "finetune.baseline", "-P", "12345678", "-q", "normal",
                      "-l", "select=1:ncpus=64:ngpus=4:mpiprocs=4:mem=440GB", "-l", "walltime=02:00:00",
                      "-j", "n"]
    double = pbs.qsub_options(finetune_props(2, 4, runtime=30), ASPIRE)
    assert double[double.index("-l"):double.index("-j")] == \
        ["-l", "select=2:ncpus=64:ngpus=4:mpiprocs=4:mem=440GB", "-l", "walltime=00:30:00", "-l", "place=scatter"]


def test_cpu_job_goes_to_the_cpu_queue_with_its_threads():
    props = {"type": "single", "rule": "convert", "jobid": 3, "wildcards": {}, "threads": 6,
             "resources": {"mem_mb": 16000, "runtime": 45}}
    assert pbs.qsub_options(props, GADI) == [
        "-N", "convert", "-P", "ab12", "-q", "normal",
        "-l", "ncpus=6,mem=16GB,jobfs=100GB,walltime=00:45:00,storage=gdata/ab12+scratch/ab12", "-j", "n"]
    assert pbs.qsub_options(props, ASPIRE)[6:8] == ["-l", "select=1:ncpus=6:mem=16GB"]


def test_standard_gpu_resource_and_internet_jobs():
    evaluate = {"type": "single", "rule": "evaluate", "jobid": 9, "wildcards": {"model": "base"}, "threads": 2,
             "resources": {"gpu": 1, "mem_mb": 8000, "runtime": 60}}
    assert "ngpus=1,ncpus=12," in " ".join(pbs.qsub_options(evaluate, GADI))
    download = {"type": "single", "rule": "weights", "jobid": 1, "wildcards": {}, "threads": 1,
                "resources": {"internet": 1, "runtime": 30}}
    assert pbs.qsub_options(download, GADI)[4:6] == ["-q", "copyq"]
    with pytest.raises(pbs.PBSError, match="no copy_queue"):
        pbs.qsub_options(download, ASPIRE)


def test_job_names_are_sanitised_for_pbs(tmp_path, pbs_env):
    props = finetune_props(1, 1, experiment="a/b%c=d@e,f g")
    assert pbs.job_name(props) == "finetune.a_b_c_d_e_f_g"
    assert pbs.sanitize_job_name(".hidden") == "j.hidden"
    assert len(pbs.sanitize_job_name("x" * 300)) == pbs.MAX_JOB_NAME
    # the emulator's qsub (PBS's documented rule) refuses the raw names and takes the sanitised ones
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    for bad in ("a/b", "a%b", "a=b", "a@b", "a,b", ".a"):
        proc = subprocess.run(["qsub", "-N", bad, "-q", "normal", str(script)], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 2 and "illegal -N value" in proc.stderr, bad
        ok = subprocess.run(["qsub", "-N", pbs.sanitize_job_name(bad), "-q", "normal", str(script)],
                            capture_output=True, text=True, cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr


def test_no_project_no_submission():
    with pytest.raises(pbs.PBSError, match="no project"):
        pbs.qsub_options(finetune_props(1, 1), {**GADI, "project": None})


def test_rendered_script_is_a_complete_run_script():
    props = finetune_props(2, 4)
    jobscript = "#!/bin/sh\n# properties = {}\ncd /work && python -m snakemake --target-jobs x && exit 0 || exit 1\n"
    text = pbs.render_script(props, {**GADI, "env": {"NCCL_SHM_DISABLE": "1"}}, jobscript, "cd x && qsub ...")
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    directives = [ln for ln in lines if ln.startswith("#PBS")]
    options = pbs.qsub_options(props, GADI)
    assert directives == [f"#PBS {options[i]} {options[i + 1]}" for i in range(0, len(options), 2)]
    assert "module load cuda/12.2.2 openmpi/4.1.5 || { echo 'module load failed' >&2; exit 1; }" in lines
    assert "export NCCL_SHM_DISABLE=1" in lines
    exported = next(ln for ln in lines if ln.startswith("export LLMHPC_SITE="))
    assert json.loads(shlex.split(exported.split("=", 1)[1])[0])["name"] == "gadi"
    assert lines[-1] == "cd /work && python -m snakemake --target-jobs x && exit 0 || exit 1"


# ------------------------------------------------------------------------------------- emulator-backed units

@pytest.fixture
def pbs_env(tmp_path, monkeypatch):
    """The PBS emulator and this environment's console scripts on PATH, a fresh emulated server."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(EMULATOR), str(Path(sys.executable).parent),
                                                os.environ["PATH"]]))
    home = tmp_path / "pbs-server"
    monkeypatch.setenv("PBS_EMULATOR_HOME", str(home))
    monkeypatch.setenv("PBS_EMULATOR_QUEUES", "gpuvolta,normal,copyq")
    monkeypatch.setenv("PBS_EMULATOR_KILL_DELAY", "0.5")
    monkeypatch.setenv("PBS_EMULATOR_QUEUE_DELAY", "0.1")
    missing = [c for c in CONSOLE_SCRIPTS if shutil.which(c) is None]
    assert not missing, f"console scripts {missing} not installed: `pip install -e .` (pyproject [project.scripts])"
    return home


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


def test_submit_writes_the_job_script_and_pbs_writes_o_and_e_files(tmp_path, pbs_env):
    root = tmp_path / "work"
    root.mkdir()
    props = finetune_props(1, 1)
    jobscript = snakemake_jobscript(tmp_path / "snakejob.sh", props,
                                    'echo "job $PBS_JOBID on $(sort -u $PBS_NODEFILE)"; echo oops >&2')
    job_id = pbs.submit(jobscript, {**GADI, "modules": []}, root=root, state_dir=root / "state", log=lambda m: None)
    assert re.fullmatch(r"\d+\.emu-pbs", job_id)
    script = root / "results/jobs/finetune/finetune.baseline.pbs"
    assert script.read_text().startswith("#!/bin/bash\n#PBS -N finetune.baseline\n")
    (argv,) = calls(pbs_env, "qsub")
    assert argv == [*pbs.qsub_options(props, GADI | {"modules": []}), str(script.resolve())]
    seq = job_id.split(".")[0]
    out = root / f"results/logs/scheduler/finetune.baseline.o{seq}"
    wait_for(out.exists)
    assert out.read_text().startswith(f"job {job_id} on ")
    assert (root / f"results/logs/scheduler/finetune.baseline.e{seq}").read_text() == "oops\n"
    assert (root / "state/jobs").read_text() == f"{job_id}\tfinetune.baseline\n"


def test_submit_reports_qsub_refusals(tmp_path, pbs_env):
    props = finetune_props(1, 1)
    jobscript = snakemake_jobscript(tmp_path / "snakejob.sh", props, "true")
    with pytest.raises(pbs.PBSError, match="qsub exited with 170: qsub: Unknown queue"):
        pbs.submit(jobscript, {**GADI, "queue": "nosuchq"}, root=tmp_path, state_dir=tmp_path / "s",
                   log=lambda m: None)


@pytest.mark.parametrize("job, answer", [
    ({"job_state": "Q"}, "running"), ({"job_state": "R"}, "running"), ({"job_state": "E"}, "running"),
    ({"job_state": "H"}, "running"), (None, "running"),
    ({"job_state": "F", "Exit_status": 0}, "success"),
    ({"job_state": "F", "Exit_status": 1}, "failed"),
    ({"job_state": "F", "Exit_status": 271, "Resource_List": {"walltime": "00:01:00"}}, "failed"),
    ({"job_state": "F", "Exit_status": -29}, "failed"),
    ({"job_state": "F", "Exit_status": 265}, "failed"),
    ({"job_state": "F"}, "failed"),
])
def test_state_mapping(job, answer):
    assert pbs_status.map_state(job)[0] == answer


def test_state_mapping_says_why():
    assert "walltime 00:01:00" in pbs_status.map_state({"job_state": "F", "Exit_status": 271,
                                                 "Resource_List": {"walltime": "00:01:00"}})[1]
    assert "walltime" in pbs_status.map_state({"job_state": "F", "Exit_status": -29})[1]
    assert "signal 9" in pbs_status.map_state({"job_state": "F", "Exit_status": 265})[1]
    assert pbs_status.map_state({"job_state": "F", "Exit_status": 2})[1] == "exited with 2"


def submit_raw(tmp_path: Path, name: str, body: str, walltime="00:10:00") -> str:
    script = tmp_path / f"{name}.sh"
    script.write_text(f"#!/bin/bash\n#PBS -l walltime={walltime}\n{body}\n")
    proc = subprocess.run(["qsub", "-N", name, "-q", "normal", str(script)], capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    return proc.stdout.strip()


def test_status_of_finished_failed_and_walltime_killed_jobs(tmp_path, pbs_env):
    state = tmp_path / "state"
    ok = submit_raw(tmp_path, "ok", "exit 0")
    bad = submit_raw(tmp_path, "bad", "exit 3")
    slow = submit_raw(tmp_path, "slow", "sleep 60", walltime="00:00:01")
    messages = []
    for job, answer in ((ok, "success"), (bad, "failed"), (slow, "failed")):
        assert wait_for(lambda: (s := pbs_status.status(job, state, cache_seconds=0, log=messages.append)) != "running"
                        and s) == answer
    assert any(f"{bad} (bad) exited with 3" in m for m in messages)
    assert any(f"{slow} (slow) killed for exceeding its walltime 00:00:01 (Exit_status 271)" in m for m in messages)
    seq = slow.split(".")[0]
    assert "=>> PBS: job killed: walltime" in (tmp_path / f"slow.e{seq}").read_text()


def test_newer_pbs_walltime_exit_code_is_a_failure_too(tmp_path, pbs_env, monkeypatch):
    monkeypatch.setenv("PBS_EMULATOR_WALLTIME_EXIT", "-29")
    slow = submit_raw(tmp_path, "slow", "sleep 60", walltime="00:00:01")
    messages = []
    assert wait_for(lambda: (s := pbs_status.status(slow, tmp_path / "st", cache_seconds=0, log=messages.append))
                    != "running" and s) == "failed"
    assert "Exit_status -29" in messages[-1]


@pytest.mark.parametrize("fault", ["exit", "garbage"])
def test_transient_qstat_failure_is_not_a_failed_job(tmp_path, pbs_env, fault):
    state = tmp_path / "state"
    job = submit_raw(tmp_path, "quick", "exit 0")
    wait_for(lambda: emulated_job(pbs_env, job)["job_state"] == "F")
    (pbs_env / "qstat_faults").write_text(json.dumps([fault]))
    messages = []
    assert pbs_status.status(job, state, cache_seconds=0, log=messages.append) == "running"
    assert "qstat failed" in messages[0]
    assert pbs_status.status(job, state, cache_seconds=0, log=messages.append) == "success"  # the next qstat works


def test_unknown_job_is_failed(tmp_path, pbs_env):
    messages = []
    assert pbs_status.status("424242.emu-pbs", tmp_path / "state", cache_seconds=0, log=messages.append) == "failed"
    assert "does not know job 424242.emu-pbs" in messages[0]


def test_many_status_calls_share_a_few_qstat(tmp_path, pbs_env):
    """Snakemake asks about each job separately; 24 concurrent status commands must not fork 24 qstat."""
    work = tmp_path / "work"
    work.mkdir()
    ids = []
    for i in range(12):
        jobscript = snakemake_jobscript(tmp_path / f"j{i}.sh", finetune_props(1, 1, experiment=f"e{i}"), "sleep 1")
        ids.append(pbs.submit(jobscript, {**GADI, "modules": []}, root=work, state_dir=work / pbs.STATE_DIR,
                              log=lambda m: None))

    def ask(job_id):
        return subprocess.run(["llmhpc-pbs-status", job_id], cwd=work, capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(ask, ids + ids))
    assert all(a.returncode == 0 and a.stdout.strip() in ("running", "success") for a in answers), answers
    assert len(calls(pbs_env, "qstat")) <= 2
    assert all(argv[:4] == ["-x", "-f", "-F", "json"] for argv in calls(pbs_env, "qstat"))


def test_cancel_runs_qdel_in_batches(tmp_path, pbs_env):
    ids = [submit_raw(tmp_path, f"long{i}", "sleep 120") for i in range(7)]
    wait_for(lambda: all(emulated_job(pbs_env, j)["job_state"] == "R" for j in ids))
    assert pbs_status.cancel(ids, batch=3) == [ids[:3], ids[3:6], ids[6:]]
    # the batches run side by side: compare them as a set
    wait_for(lambda: len(calls(pbs_env, "qdel")) == 3)
    assert sorted(calls(pbs_env, "qdel")) == [ids[:3], ids[3:6], ids[6:]]
    finished = wait_for(lambda: all(emulated_job(pbs_env, j)["job_state"] == "F" for j in ids))
    assert finished and {emulated_job(pbs_env, j)["Exit_status"] for j in ids} == {271}


def test_cancel_command_returns_within_snakemakes_two_seconds(tmp_path, pbs_env):
    ids = [submit_raw(tmp_path, f"c{i}", "sleep 120") for i in range(3)]
    start = time.time()
    proc = subprocess.run(["llmhpc-pbs-cancel", *ids], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0 and time.time() - start < 2
    wait_for(lambda: all(emulated_job(pbs_env, j)["job_state"] == "F" for j in ids))


# -------------------------------------------------------------------------------------------------- the site

def test_site_comes_from_the_profile_and_config_keys_override_it(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = {"site": {"project": "xy99"}}
    source = preflight.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--profile", "profiles/gadi"], environ={})
    assert source.endswith("profiles/gadi/site.yaml")
    assert cfg["site"]["name"] == "gadi" and cfg["site"]["project"] == "xy99" and cfg["site"]["queue"] == "gpuvolta"
    cfg = {}
    preflight.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--profile=profiles/aspire2a"], environ={})
    assert cfg["site"]["name"] == "aspire2a"
    cfg = {}
    preflight.apply_site(cfg, SITE_SCHEMA, argv=["snakemake"], environ={"SNAKEMAKE_PROFILE": "profiles/gadi"})
    assert cfg["site"]["name"] == "gadi"
    cfg = {}  # the default workflow profile has no site: the local default
    assert preflight.apply_site(cfg, SITE_SCHEMA, argv=["snakemake"], environ={}) == "config"
    assert cfg["site"] == {}


def test_jobs_get_the_site_from_the_environment():
    site = {"name": "gadi", "scheduler": "pbs", "project": "ab12"}
    env = {}
    preflight.export_site(site, env)
    cfg = {"site": {"project": "ab12"}}
    assert preflight.apply_site(cfg, SITE_SCHEMA, argv=["snakemake", "--mode", "remote"], environ=env) == "$LLMHPC_SITE"
    assert cfg["site"] == site


def test_bad_site_file_is_refused_naming_the_file(tmp_path):
    profile = tmp_path / "myprofile"
    profile.mkdir()
    (profile / "config.yaml").write_text("jobs: 1\n")
    (profile / "site.yaml").write_text("name: x\nsheduler: pbs\ngpus_per_node: four\n")
    with pytest.raises(ConfigError) as err:
        preflight.apply_site({}, SITE_SCHEMA, argv=["snakemake", "--profile", str(profile)], environ={})
    text = str(err.value)
    assert f"site file {profile / 'site.yaml'} refused" in text
    assert "config key 'site.sheduler': unknown key (did you mean 'scheduler'?)" in text
    assert "config key 'site.gpus_per_node': expected a value of type integer, got 'four'" in text


# -------------------------------------------------------------------------------------------------- preflight

def experiments_for(**finetune) -> tuple[dict, dict]:
    cfg = default_config()
    cfg["finetune"].update(finetune)
    cfg["experiments"] = [{"name": "baseline"}]
    return cfg, check(cfg, load_schema(SCHEMA))


def refusal(cfg, experiments, site, workdir="/home/user/run", overrides=None) -> str:
    cfg["site"] = site
    with pytest.raises(ConfigError) as err:
        preflight.preflight(cfg, experiments, workdir, overrides)
    return str(err.value)


def test_preflight_passes_the_seed_workload_on_both_sites():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=256,
                                micro_batch_size=32)
    for site in (GADI, ASPIRE):
        cfg["site"] = site
        preflight.preflight(cfg, exps, "/scratch/ab12/run")


def test_preflight_refuses_bf16_on_v100():
    cfg, exps = experiments_for(precision="bf16-true")
    assert "finetune.precision bf16-true on V100, which has no bf16 tensor cores: use 16-mixed" in \
        refusal(cfg, exps, GADI)
    cfg["site"] = ASPIRE
    preflight.preflight(cfg, exps, "/home/user/run")  # A100 has bf16


def test_preflight_refuses_more_devices_than_a_node_has():
    cfg, exps = experiments_for(devices=8, global_batch_size=64, micro_batch_size=4)
    assert "finetune.devices 8 per node, but a gadi node has 4 GPUs: set devices to 4 or less and raise num_nodes" \
        in refusal(cfg, exps, GADI)


def test_batch_arithmetic_for_the_total_gpu_count_is_refused_before_preflight():
    # the organisers' settings: global 128 over 2 x 4 GPUs leaves 16 per rank, below micro batch 32; the config
    # check (which runs before preflight, on every site) refuses it, so preflight need not check it again
    with pytest.raises(ConfigError) as err:
        experiments_for(devices=4, num_nodes=2, global_batch_size=128, micro_batch_size=32)
    assert "= 8 ranks gives 16 sample(s) per rank, fewer than micro_batch_size 32" in str(err.value)


def test_preflight_refuses_a_missing_project():
    cfg, exps = experiments_for()
    assert "site 'gadi' (PBS) has no project code: set site.project in the profile's site.yaml" in \
        refusal(cfg, exps, {**GADI, "project": None})


def test_preflight_refuses_gadi_paths_outside_the_storage_list(tmp_path):
    cfg, exps = experiments_for()
    cfg["model"]["path"] = "/g/data/xy12/models/llama-2-7b"
    text = refusal(cfg, exps, GADI, workdir="/scratch/zz99/me/run")
    assert "model.path /g/data/xy12/models/llama-2-7b is on gdata/xy12, which the jobs would not mount" in text
    assert "working directory /scratch/zz99/me/run is on scratch/zz99" in text
    assert "add 'gdata/xy12' to site.storage" in text
    cfg["site"] = {**GADI, "storage": ["gdata/ab12", "scratch/ab12", "gdata/xy12", "scratch/zz99"]}
    preflight.preflight(cfg, exps, "/scratch/zz99/me/run")


def test_preflight_refuses_multi_node_without_a_multi_node_launcher():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=64)
    assert "finetune.num_nodes 2 with site.launcher 'local'" in refusal(cfg, exps, {**GADI, "launcher": "local"})


def test_preflight_refuses_resources_that_disagree_with_litgpt():
    cfg, exps = experiments_for(devices=4, num_nodes=2, precision="16-mixed", global_batch_size=64)
    text = refusal(cfg, exps, GADI, workdir="/scratch/ab12/run", overrides={"nodes": 1})
    assert "--set-resources finetune:nodes=1 disagrees with finetune devices 4 x num_nodes 2 (expected 2)" in text


def test_preflight_has_nothing_to_say_locally():
    cfg, exps = experiments_for(precision="bf16-true", devices=8, global_batch_size=64)
    cfg["site"] = site_of("gadi") | {"scheduler": "local"}
    preflight.preflight(cfg, exps, "/anywhere")


# ------------------------------------------------------------------------------------------ multi-node launch

def test_mpirun_one_rank_per_gpu_over_the_node_file(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())  # as if mpi4py were there
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("gadi-gpu-1\n" * 48 + "gadi-gpu-2\n" * 48)  # Gadi lists a host once per CPU
    ft = {"num_nodes": 2, "devices": 4, "launch_env": {"NCCL_SHM_DISABLE": "1"}}
    site = {**GADI, "env": {"NCCL_DEBUG": "WARN", "NCCL_SHM_DISABLE": "0"}}
    plan = launch.plan(site, ft, {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "1.gadi"}, tmpdir=str(tmp_path))
    hostfile = plan["prefix"][plan["prefix"].index("--hostfile") + 1]
    assert Path(hostfile).read_text() == "gadi-gpu-1 slots=4\ngadi-gpu-2 slots=4\n"
    assert plan["prefix"] == ["mpirun", "-np", "8", "--hostfile", hostfile, "--map-by", "ppr:4:node",
                              "-x", "NCCL_DEBUG", "-x", "NCCL_SHM_DISABLE", "-x", "OMP_NUM_THREADS",
                              "--bind-to", "none"]
    assert plan["env"] == {"NCCL_DEBUG": "WARN", "NCCL_SHM_DISABLE": "1", "OMP_NUM_THREADS": "12"}
    assert plan["hosts"] == ["gadi-gpu-1", "gadi-gpu-2"] and plan["job_id"] == "1.gadi"


def test_launch_refuses_a_job_whose_nodes_differ_from_num_nodes(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: object())
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\n")
    with pytest.raises(launch.LaunchError, match=r"the job has 1 node\(s\) .* but finetune.num_nodes is 2"):
        launch.plan(GADI, {"num_nodes": 2, "devices": 4}, {"PBS_NODEFILE": str(nodefile)}, tmpdir=str(tmp_path))


def test_mpirun_needs_mpi4py(monkeypatch):
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(launch.LaunchError, match="needs mpi4py"):
        launch.plan(GADI, {"num_nodes": 2, "devices": 4}, {"PBS_NODEFILE": "/nonexistent"})


def test_one_node_jobs_let_litgpt_start_its_processes():
    plan = launch.plan(GADI, {"num_nodes": 1, "devices": 4}, {})
    assert plan["prefix"] == [] and plan["launcher"] == "local" and plan["site_launcher"] == "mpirun"


def test_pernode_starts_torchrun_per_node_remote_ones_through_the_remote_shell():
    commands = launch.node_commands(["python", "-m", "litgpt", "finetune_full"], ["n1", "n2"], 4, 29500,
                                    ["ssh", "-o", "BatchMode=yes"], ["NCCL_DEBUG"], False,
                                    environ={"NCCL_DEBUG": "INFO", "PATH": "/x/bin"})
    local, remote = commands
    assert local[0][3:10] == ["--nnodes=2", "--node-rank=0", "--nproc-per-node=4", "--master-addr=n1",
                              "--master-port=29500", "--no-python", "python"]
    assert remote[0][:4] == ["ssh", "-o", "BatchMode=yes", "n2"]
    assert "env NCCL_DEBUG=INFO PATH=/x/bin " in remote[0][4] and "--node-rank=1" in remote[0][4]
    colocated = launch.node_commands(["true"], ["127.0.0.1"] * 2, 2, 1, ["ssh"], [], True, environ={})
    assert [extra for _, extra in colocated] == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]


def test_pernode_two_nodes_on_one_host_rendezvous_for_real(tmp_path):
    """The pernode launcher with real torchrun: 2 node ranks x 2 processes join one gloo process group."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, torch, torch.distributed as dist\n"
        "dist.init_process_group('gloo')\n"
        "t = torch.tensor([dist.get_rank()]); dist.all_reduce(t)\n"
        # one write(2) per line: a node's two processes share torchrun's stdout, and print() may write the text
        # and its newline separately (PYTHONUNBUFFERED), which lets their lines interleave
        "os.write(1, f\"rank {dist.get_rank()}/{dist.get_world_size()} local {os.environ['LOCAL_RANK']}"
        " node {os.environ['GROUP_RANK']} sum {int(t)}\\n\".encode())\n"
        "dist.destroy_process_group()\n")
    site = {"name": "one-host", "launcher": "pernode", "nodes_on_one_host": True, "env": {}}
    plan = launch.plan(site, {"num_nodes": 2, "devices": 2}, {})
    proc = subprocess.run([*plan["prefix"], sys.executable, str(probe)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = sorted(re.findall(r"\[node (\d)\] rank (\d)/4 local (\d) node (\d) sum 6", proc.stdout))
    assert ranks == [("0", "0", "0", "0"), ("0", "1", "1", "0"), ("1", "2", "0", "1"), ("1", "3", "1", "1")]


def test_pernode_stops_the_other_nodes_when_one_fails(tmp_path):
    commands = [([sys.executable, "-c", "import time; time.sleep(60)"], {}),
                ([sys.executable, "-c", "import sys; print('boom'); sys.exit(7)"], {})]
    start = time.time()
    assert launch.run_nodes(commands, out=open(tmp_path / "out", "w")) == 7
    assert time.time() - start < 20
    assert (tmp_path / "out").read_text() == "[node 1] boom\n"


# ---------------------------------------------------------------------------- the workflow through the profiles

def cluster_repo(tmp_path: Path, **site) -> Path:
    """A copy of the repository and a config file of test-site keys (no environment modules on this machine;
    status checks every 2 s instead of 30)."""
    repo = copy_repo(tmp_path / "repo")
    (repo / "test-site.yaml").write_text(yaml.safe_dump({"site": {"modules": [], "jobfs_gb": None, **site}}))
    return repo


def run_profile(repo: Path, profile: str, *args, check=True, timeout=900):
    return snakemake(repo, "--profile", f"profiles/{profile}", "--configfile", "tests/quick.yaml", "test-site.yaml",
                     "--seconds-between-status-checks", "2", *args, check=check, timeout=timeout)


def qsub_lines(output: str) -> list[str]:
    start = output.index("PBS submissions of this dry run")
    return [ln.strip() for ln in output[start:].splitlines()[1:] if ln.strip().startswith("cd ")]


def test_shipped_gadi_profile_refuses_before_queueing_until_a_project_is_set(tmp_path, pbs_env):
    repo = copy_repo(tmp_path / "repo")
    proc = snakemake(repo, "--profile", "profiles/gadi", "-n", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "preflight for site 'gadi' refused:" in output
    assert "site 'gadi' (PBS) has no project code: set site.project in the profile's site.yaml" in output
    assert not calls(pbs_env, "qsub")


@pytest.mark.e2e
def test_embedded_default_through_the_gadi_profile(tmp_path, pbs_env):
    repo = cluster_repo(tmp_path, project="ab12", env={"NCCL_SHM_DISABLE": "1"})
    dry = run_profile(repo, "gadi", "-n")
    lines = qsub_lines(dry.stdout + dry.stderr)
    logs, jobs = repo / "results/logs/scheduler", repo / "results/jobs"
    assert f"cd {logs} && qsub -N finetune.baseline -P ab12 -q gpuvolta" \
           f" -l ngpus=1,ncpus=12,mem=95500MB,walltime=02:00:00 -j n {jobs}/finetune/finetune.baseline.pbs" in lines
    assert f"cd {logs} && qsub -N convert -P ab12 -q normal -l ncpus=1,mem=8GB,walltime=01:00:00 -j n" \
           f" {jobs}/convert/convert.pbs" in lines
    assert len(lines) == 6 and not calls(pbs_env, "qsub")  # convert, 2 finetunes, 3 evaluations; nothing submitted

    run_profile(repo, "gadi")
    submitted = calls(pbs_env, "qsub")
    assert sorted(submitted) == sorted(shlex.split(ln.split(" && qsub ", 1)[1]) for ln in lines)
    assert len(calls(pbs_env, "qstat")) < 3 * len(submitted) + 30  # one qstat per cache window, not per call
    assert (repo / "results/summary.csv").exists()
    for name in ("finetune/finetune.baseline.pbs", "finetune/finetune.mbs16.pbs", "evaluate/evaluate.base.pbs",
                 "convert/convert.pbs"):
        assert (jobs / name).read_text().startswith("#!/bin/bash\n#PBS -N ")
    assert len(list(logs.glob("finetune.baseline.o*"))) == 1 and len(list(logs.glob("evaluate.mbs16.e*"))) == 1
    record = json.loads((repo / "results/finetune/baseline/summary.json").read_text())["launch"]
    assert record["site"] == "gadi" and record["env"] == {"NCCL_SHM_DISABLE": "1", "OMP_NUM_THREADS": "12"}
    assert re.fullmatch(r"\d+\.emu-pbs", record["job_id"])


@pytest.mark.e2e
def test_embedded_default_through_the_aspire2a_profile(tmp_path, pbs_env):
    repo = cluster_repo(tmp_path, project="12345678")
    run_profile(repo, "aspire2a")
    submitted = calls(pbs_env, "qsub")
    finetune = next(a for a in submitted if a[1] == "finetune.baseline")
    assert finetune[:finetune.index("-j")] == ["-N", "finetune.baseline", "-P", "12345678", "-q", "normal", "-l",
                                              "select=1:ncpus=16:ngpus=1:mpiprocs=1:mem=110GB", "-l",
                                              "walltime=02:00:00"]
    assert (repo / "results/summary.csv").exists() and len(submitted) == 6


@pytest.mark.e2e
def test_failed_and_walltime_killed_jobs_fail_the_run_and_keep_their_logs(tmp_path, pbs_env, monkeypatch):
    monkeypatch.setenv("PBS_EMULATOR_TIME_SCALE", "0.05")  # one emulated minute of walltime lasts 3 s
    repo = cluster_repo(tmp_path, project="ab12")
    quick = yaml.safe_load((repo / "tests/quick.yaml").read_text())
    # `broken` passes the checks but litgpt refuses its config: the job exits non-zero
    quick["experiments"] = [{"name": "slow"},
                            {"name": "broken", "finetune": {"extra": {"train": {"no_such_key": 1}}}}]
    (repo / "tests/quick.yaml").write_text(yaml.safe_dump(quick))
    # one emulated minute for `slow`, an hour for `broken` (resource values are expressions of the wildcards)
    runtime = "finetune:runtime=1 if wildcards.experiment == 'slow' else 60"
    proc = run_profile(repo, "gadi", "--keep-going", "--set-resources", runtime,
                       "--", "results/finetune/slow/summary.json", "results/finetune/broken/summary.json", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r"job \d+\.emu-pbs \(finetune\.slow\) killed for exceeding its walltime 00:01:00"
                     r" \(Exit_status 271\)", output)
    assert re.search(r"job \d+\.emu-pbs \(finetune\.broken\) exited with 1", output)
    assert "Error in rule finetune" in output
    logs = repo / "results/logs/scheduler"
    (slow_e,) = logs.glob("finetune.slow.e*")
    assert "=>> PBS: job killed: walltime" in slow_e.read_text()
    (broken_e,) = logs.glob("finetune.broken.e*")
    assert broken_e.stat().st_size > 0
    # Snakemake removes a failed job's outputs; its log says why
    rule_log = (repo / "results/logs/finetune/broken.log").read_text()
    assert "litgpt finetune_full exited with 2" in rule_log and "no_such_key" in rule_log
