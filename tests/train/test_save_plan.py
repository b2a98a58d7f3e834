"""The fsdp2 engine's save plan from the job's walltime and the measured step and save times, and the step
checkpoints' manager that the loop asks (unit, no torch run)."""

import types

import pytest

from llmhpc.train import walltime
from llmhpc.train.fsdp2 import save_plan
from llmhpc.train.fsdp2.distributed import World

# step the plan is made at, time left (s), walltime (s), step s, save s, share, save_interval -> saves after
TABLE = [
    # 4 h job, 2 s steps, 60 s saves: 10 % of 4 h = 720 steps > 200: the save_interval bounds it
    (3, 14400 - 10, 14400, 2.0, 60.0, 0.1, 200, [200, 400], 3 + (14390 - 64) // 2),
    # 1 h job, 5 s steps: 10 % = 360 s = 72 steps
    (3, 3590, 3600, 5.0, 30.0, 0.1, 200, [72, 144], 3 + (3590 - 40) // 5),
    # 10 min job, 1 s steps, 20 % share: 120 steps; the last save after step 3 + 600 - 32 - 10 = 561
    (3, 590, 600, 1.0, 30.0, 0.2, 200, [120, 240], 3 + 590 - 32),
    # too little left already (less than 2 steps + a save): save now
    (10, 50, 600, 10.0, 40.0, 0.1, 200, [6, 12], 10),
    # steps longer than the share: every step
    (3, 500, 600, 90.0, 10.0, 0.1, 200, [1, 2, 3], 3 + (500 - 190) // 90),
]


@pytest.mark.parametrize("step, left, wall, step_s, save_s, share, cap, multiples, deadline", TABLE)
def test_plan_table(step, left, wall, step_s, save_s, share, cap, multiples, deadline):
    plan = walltime.plan(step, left, wall, step_s, save_s, share, cap)
    assert plan.deadline == deadline
    assert plan.every == multiples[0]
    assert all(plan.due(m) for m in multiples)
    assert not plan.due(multiples[0] + 1) or multiples[0] == 1 or multiples[0] + 1 == deadline
    assert plan.due(deadline)
    # a kill loses at most the share of the walltime (or one step) when the save_interval does not bound it
    assert plan.every * step_s <= max(share * wall, step_s) or plan.every == cap
    assert plan.why


def test_plan_unknown_end_and_guessed_save():
    plan = walltime.plan(0, None, None, 0.0, None, 0.1, 200)
    assert (plan.every, plan.deadline) == (200, None) and "unknown" in plan.why
    guessed = walltime.plan(3, 1000, 1000, 1.0, None, 0.1, 200)  # save time not measured: max(10 steps, 30 s)
    assert guessed.deadline == 3 + (1000 - 32) // 1 and "guessed" in guessed.why


def test_job_clock():
    assert walltime.job_clock({}, 100.0, 60) is None  # a local run: nothing kills it
    assert walltime.job_clock({"SLURM_JOB_END_TIME": "5000", "SLURM_JOB_START_TIME": "1400"}, 2000.0) == (1400, 5000)
    assert walltime.job_clock({"SLURM_JOB_END_TIME": "5000", "SLURM_JOB_ID": "1"}, 2000.0) == (2000, 5000)
    assert walltime.job_clock({"PBS_JOBID": "1.pbs", "PBS_WALLTIME": "3600"}, 100.0, 60) == (100, 3700)
    assert walltime.job_clock({"PBS_JOBID": "1.pbs"}, 100.0, 30) == (100, 1900)  # the rule's runtime (minutes)
    assert walltime.job_clock({"SLURM_JOB_ID": "7"}, 100.0, None) is None
    env = walltime.engine_env({"SLURM_JOB_ID": "7"}, 100.0, 10, 0.2)
    assert env == {walltime.START: "100", walltime.END: "700", walltime.SHARE: "0.2"}


def run_of(save_interval):
    return types.SimpleNamespace(train=types.SimpleNamespace(save_interval=save_interval))


def test_schedule_without_end_is_the_save_interval(capsys):
    sched = save_plan.Schedule(run_of(5), World(), environ={})
    assert [s for s in range(1, 16) if sched.due(s)] == [5, 10, 15]
    assert "every 5 steps" in capsys.readouterr().out


def test_schedule_measures_then_plans(monkeypatch, capsys):
    clock = {"t": 0.0}
    monkeypatch.setattr(save_plan.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(save_plan.time, "time", lambda: 1000.0 + clock["t"])
    env = {walltime.START: "1000", walltime.END: "1100", walltime.SHARE: "0.1"}  # 100 s walltime
    sched = save_plan.Schedule(run_of(200), World(), environ=env)
    due = []
    for s in range(1, 60):
        clock["t"] += 1.0  # 1 s a step
        if sched.due(s):
            due.append(s)
            clock["t"] += 5.0  # a save of 5 s
            sched.saved(s, 5.0)
    out = capsys.readouterr().out
    assert "Step checkpoints every 10 steps" in out  # 10 % of 100 s at 1 s a step
    assert due[:2] == [10, 20]
    # after the first save the save time is known: a last save leaves 2 steps + 5 s before the end
    last = due[-1]
    assert 1 + last + 5 * len(due) + 7 <= 100 + 1
    assert not any(s > last for s in due)


def test_step_checkpoints_save_on_the_plan_before_the_last_step_and_stop_on_the_warning(monkeypatch, capsys):
    """StepCheckpoints (what the loop asks about step checkpoints): none without save_interval; with it, the plan's
    steps but the last one (the final checkpoint holds its weights), any step on the scheduler's warning, and a
    save on the warning ends the run with the signal's exit status."""
    from llmhpc.train.fsdp2 import step_checkpoint

    for key in (walltime.START, walltime.END, walltime.SHARE):
        monkeypatch.delenv(key, raising=False)
    state = types.SimpleNamespace(world=World())
    run = types.SimpleNamespace(train=types.SimpleNamespace(save_interval=0), resume=None)
    off = step_checkpoint.StepCheckpoints.open(state, run)
    assert off.resumed_at == 0 and off.stop_flag() is None
    assert not any(off.due(s, stop=False, last_step=8) for s in range(1, 9))
    off.release()

    run.train.save_interval = 2
    saved = []
    monkeypatch.setattr(step_checkpoint, "save", lambda state, run, step: saved.append(step))
    on = step_checkpoint.StepCheckpoints.open(state, run)
    try:
        assert on.stop_flag().item() == 0.0
        assert [s for s in range(1, 9) if on.due(s, stop=False, last_step=8)] == [2, 4, 6]
        assert on.due(3, stop=True, last_step=8)
        on.save(4, stop=False)
        with pytest.raises(step_checkpoint.Stopped) as stopped:
            on.save(5, stop=True)
        assert saved == [4, 5] and stopped.value.code == 143  # no signal of its own: another rank's SIGTERM
    finally:
        on.release()
    assert "Stopped after step 5" in capsys.readouterr().out


def test_phase_clock_splits_the_run_into_its_phases():
    from llmhpc.train.fsdp2.state import PhaseClock

    clock = PhaseClock(launch=0.0, imported=2.0, imported_at=1000.0, warm_start=3.0, warm_end=5.0, train_start=5.5,
                       train_end=15.5, saved=17.0)
    assert clock.phase_times() == {"startup_s": 2.0, "load_s": 1.5, "warmup_s": 2.0, "work_s": 10.0, "save_s": 1.5,
                                   "imported_at": 1000.0}
