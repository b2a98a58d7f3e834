"""PBS Pro commands: qsub options and job scripts, submit, status and cancel, against the PBS emulator
(tests/pbs_emulator: PBS Pro's documented command-line behaviour; PBS Pro itself cannot be installed here)."""

import json
import re
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmhpc.cluster import pbs, pbs_status
from pbs_helpers import ASPIRE, GADI, calls, emulated_job, finetune_props, snakemake_jobscript, wait_for

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


def test_qsub_missing_is_one_line_with_what_to_do(tmp_path, monkeypatch, capsys):
    """Off the cluster, or without its PBS module loaded: no traceback, the next step instead."""
    from llmhpc.cluster.site import SITE_ENV, dump_site

    def no_such_program(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    monkeypatch.setattr(pbs.subprocess, "run", no_such_program)
    monkeypatch.setenv(SITE_ENV, dump_site(GADI))
    monkeypatch.chdir(tmp_path)
    jobscript = snakemake_jobscript(tmp_path / "snakejob.sh", finetune_props(1, 1), "true")
    assert pbs.submit_main([str(jobscript)]) == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]  # after the qsub command line it logs
    assert "Traceback" not in err
    assert line.startswith("llmhpc.cluster.pbs submit: qsub is not on PATH: run snakemake on a login node of the"
                           " PBS cluster, or load its PBS module first (e.g. `module load pbs`); the job script is"
                           " ready in "), line
    monkeypatch.setattr(pbs_status.subprocess, "Popen", no_such_program)
    assert pbs_status.cancel(["1.pbs", "2.pbs"]) == [["1.pbs", "2.pbs"]]
    assert "llmhpc-pbs-cancel: qdel is not on PATH" in capsys.readouterr().err


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


@pytest.mark.parametrize("body, answer", [("exit 0", "success"), ("exit 4", "failed")])
def test_a_job_purged_from_pbs_history_resolves_from_its_exit_record(tmp_path, pbs_env, monkeypatch, body, answer):
    """PBS purges finished jobs after job_history_duration (here at once); qstat -x then answers "Unknown Job Id".
    A job seen running before must not stay `running` forever: the job script's exit record decides."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PBS_EMULATOR_HISTORY_SECONDS", "0")
    jobscript = snakemake_jobscript(tmp_path / "snakejob.sh", finetune_props(1, 1), f"sleep 1; {body}")
    job_id = pbs.submit(jobscript, {**GADI, "modules": []}, log=lambda m: None)
    messages = []
    assert pbs_status.status(job_id, cache_seconds=0, log=messages.append) == "running"  # seen queued or running
    got = wait_for(lambda: (s := pbs_status.status(job_id, cache_seconds=0, log=messages.append)) != "running" and s)
    assert got == answer
    assert any(f"PBS no longer knows job {job_id} (purged from its history); its exit record" in m for m in messages)


def test_a_purged_job_without_exit_record_fails_after_the_grace_period(tmp_path, pbs_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PBS_EMULATOR_HISTORY_SECONDS", "0")
    monkeypatch.setattr(pbs_status, "PURGE_GRACE", 2.0)
    job_id = submit_raw(tmp_path, "raw", "sleep 1; exit 0")  # not rendered by the workflow: no exit record
    messages = []
    assert pbs_status.status(job_id, cache_seconds=0, log=messages.append) == "running"
    start = time.time()
    assert wait_for(lambda: pbs_status.status(job_id, cache_seconds=0, log=messages.append) == "failed")
    assert time.time() - start >= 2.0
    assert any("left no exit record in 2 s" in m for m in messages)
