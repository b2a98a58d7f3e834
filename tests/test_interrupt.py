"""A SIGINT to Snakemake's process alone reaches its running local jobs (Snakemake 9 waits for them without a signal),
and is then handled as Snakemake handles it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from llmhpc import interrupt

pytestmark = pytest.mark.subprocess

JOB = ("import signal, sys, time\n"
       "signal.signal(signal.SIGINT, lambda n, f: (print('got SIGINT', flush=True), sys.exit(0)))\n"
       "print('ready', flush=True)\n"
       "time.sleep(60)\n")


def test_a_sigint_to_snakemake_is_handed_on_to_its_jobs_then_raised_as_snakemake_expects():
    job = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True)
    assert job.stdout.readline().strip() == "ready"
    assert job.pid in interrupt.children(os.getpid())
    before = signal.getsignal(signal.SIGINT)
    try:
        interrupt.forward_sigint_to_jobs()
        with pytest.raises(KeyboardInterrupt):  # Snakemake's own handling still runs
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, before)
    assert job.communicate(timeout=30)[0].strip() == "got SIGINT" and job.returncode == 0


def test_the_stage_hands_one_signal_on_as_sigterm_and_kills_only_on_a_later_one(monkeypatch):
    """One Ctrl-C reaches the stage twice (the terminal's group, Snakemake's forward): one SIGTERM to the engine; a
    signal again after RELAY_KILL_AFTER_S is the user insisting: SIGKILL."""
    sent, clock = [], [100.0]

    class Engine:
        def send_signal(self, sig):
            sent.append(sig)

    monkeypatch.setattr(interrupt.time, "monotonic", lambda: clock[0])
    relay = interrupt.Relay(Engine(), log=lambda m: None)
    relay._relay(signal.SIGINT, None)
    clock[0] += 0.5
    relay._relay(signal.SIGINT, None)
    assert sent == [signal.SIGTERM] and relay.signum == signal.SIGINT
    clock[0] += interrupt.RELAY_KILL_AFTER_S
    relay._relay(signal.SIGINT, None)
    assert sent == [signal.SIGTERM, signal.SIGKILL]
