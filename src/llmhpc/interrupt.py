"""What a Ctrl-C, scancel or qdel does to a running fine-tune: it saves a step checkpoint and stops within seconds,
so that the rerun resumes instead of starting over.

Who gets the signal:
- Ctrl-C in the terminal: SIGINT to the foreground process group, which holds Snakemake, each local job's script
  (the stage) and the engine it started (Snakemake 9 starts them in its own group and session).
- SIGINT to the Snakemake process alone (`kill -INT <pid>`, a wrapper that signals only its child): Snakemake says
  "Terminating processes on user request" and then waits for its running jobs without signalling them (9.27, measured
  with a job that logs its signals: it ran to its end, then was marked incomplete). `forward_sigint_to_jobs`, called
  in Snakemake's main process, hands the SIGINT on to its direct children (the jobs) first.
- scancel, qdel, a walltime: SIGTERM to every process of the job (stage and engine), SIGKILL after a delay.
SIGTERM to Snakemake itself keeps Snakemake's meaning (finish the running jobs, start no new ones): not forwarded.

The stage (`Relay`) outlives the signal: it hands a SIGTERM on to the engine and keeps teeing its output until the
engine has saved and exited (a stage that died at once would close the engine's stdout under it, and the engine
would die on its next print, in the middle of the save). A signal that comes again after RELAY_KILL_AFTER_S kills the
engine (the user insists); the engines save at the end of the optimizer step they are in (llmhpc.train.fsdp2.step_checkpoint,
llmhpc.train.stock_run).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

RELAY_KILL_AFTER_S = 3.0  # one Ctrl-C reaches the stage twice (the terminal's group, and Snakemake's forward)


def children(pid: int) -> list[int]:
    """The direct children of `pid`, from /proc (Linux); [] elsewhere."""
    out = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(entry.parent.name))
    return out


def forward_sigint_to_jobs() -> None:
    """In Snakemake's main process: a SIGINT is handed on to the running local jobs, then handled as Snakemake does
    (its KeyboardInterrupt). Does nothing where SIGINT is ignored (a background job of a non-interactive shell)."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        return

    def forward(signum, frame):
        for pid in children(os.getpid()):
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, forward)


class Relay:
    """While the stage waits for its engine (`proc`): SIGINT / SIGTERM are handed on as SIGTERM, noted in
    `signum`, and the stage keeps reading; a signal again after RELAY_KILL_AFTER_S kills the engine."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, proc, log=print) -> None:
        self.proc, self.log, self.signum, self.first = proc, log, 0, 0.0
        self.previous = {}

    def __enter__(self) -> Relay:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._relay) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _relay(self, signum, frame) -> None:
        now = time.monotonic()
        if not self.signum:
            self.signum, self.first = signum, now
            self.log(f"{signal.Signals(signum).name}: asking the fine-tune to save a step checkpoint and stop"
                     " (again after a few seconds: stop it at once)")
            self._send(signal.SIGTERM)
        elif now - self.first > RELAY_KILL_AFTER_S:
            self.log(f"{signal.Signals(signum).name} again: stopping the fine-tune now, without a checkpoint")
            self._send(signal.SIGKILL)

    def _send(self, sig) -> None:
        try:
            self.proc.send_signal(sig)
        except OSError:
            pass  # already gone
