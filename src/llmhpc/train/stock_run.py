"""`python -m llmhpc.train.stock_run finetune_full --config X`: stock `litgpt finetune_full`, unchanged but for one
thing: a SIGINT, SIGTERM or SIGUSR1 (Ctrl-C, scancel, qdel, a walltime warning) makes it save a step checkpoint at
the end of the optimizer step it is in, with LitGPT's own save, and exit 128 + the signal's number, so that the rerun
resumes (`resume: auto`) instead of starting over. Stock LitGPT has no handler: a signal killed it where it stood.

How, without a copy of LitGPT's loop: `fit` reads `train.save_interval` at every iteration, so `fit` runs with a view
of its TrainArgs whose save_interval is 1 once a signal was noted (all processes agree at each optimizer step: the
flag is summed over them there); at the next read after that save the run exits, on every process at the same point.
finetune_lora (LitGPT 0.5.x has no resume for it) and other commands (convert_to_litgpt) run as they are. Every
command's process builds the parser of its command only (3 s less) and skips the interpreter's last full garbage
collection (llmhpc.process_exit): 2 s of a 2-core machine after LitGPT has written and closed its outputs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class Stop:
    """The signal noted on this process, and whether every process has agreed to save and stop."""

    def __init__(self) -> None:
        self.signum = 0
        self.agreed_at = None  # the iteration at which every process knew of a signal

    def listen(self) -> None:
        """From the start of training (before it, a signal ends the run as it always did: nothing to save)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        if not self.signum:
            print(f"{signal.Signals(signum).name}: saving a step checkpoint at the end of this optimizer step, then"
                  " stopping", flush=True)
        self.signum = self.signum or signum

    def agreed(self, fabric) -> bool:
        """Whether any process got a signal (a sum over processes where there are several)."""
        if fabric.world_size == 1:
            return self.signum > 0
        import torch

        return fabric.all_reduce(torch.tensor(float(self.signum > 0), device=fabric.device), reduce_op="sum").item() > 0


class StoppingTrainArgs:
    """LitGPT's TrainArgs for `fit`, whose save_interval turns to 1 at the optimizer step after a signal."""

    def __init__(self, train, state: dict, fabric, accumulation: int, stop: Stop) -> None:
        self._train, self._state, self._fabric, self._accumulation, self._stop = train, state, fabric, accumulation, stop

    def __getattr__(self, name):
        return getattr(self._train, name)

    @property
    def save_interval(self):
        iteration = self._state["iter_num"]
        stop = self._stop
        if stop.agreed_at is not None and iteration > stop.agreed_at:  # that step's checkpoint is written
            sys.stdout.flush()
            raise SystemExit(128 + (stop.signum or signal.SIGTERM))
        if iteration % self._accumulation == 0 and stop.agreed_at is None and stop.agreed(self._fabric):
            stop.agreed_at = iteration  # the same iteration on every process: all read this at each step's end
        return 1 if stop.agreed_at is not None else self._train.save_interval


def install() -> None:
    """Wrap litgpt.finetune.full.fit so that it runs with StoppingTrainArgs."""
    from litgpt.finetune import full

    original = full.fit

    def fit(*args, **kwargs):
        train, devices, stop = kwargs["train"], kwargs["devices"], Stop()
        accumulation = train.gradient_accumulation_iters(devices, kwargs.get("num_nodes", 1))
        kwargs["train"] = StoppingTrainArgs(train, kwargs["state"], kwargs["fabric"], accumulation, stop)
        stop.listen()
        return original(*args, **kwargs)

    full.fit = fit


def main() -> None:
    from llmhpc import process_exit

    process_exit.skip_final_collection()  # LitGPT has saved and closed everything when its command returns
    if sys.argv[1:2] == ["finetune_full"]:
        install()
    from litgpt import __main__ as litgpt_cli

    with one_command(litgpt_cli, sys.argv[1] if len(sys.argv) > 1 else ""):
        litgpt_cli.main()  # reads sys.argv[1:]; Lightning relaunches this module with the same arguments for its ranks


@contextlib.contextmanager
def one_command(litgpt_cli, command: str):
    """LitGPT's main() builds a jsonargparse parser for each of its 22 commands before it parses one: 3.3 s of a
    2-core machine (their dataclasses' docstrings are parsed), against 0.3 s for the one named. LitGPT's own main()
    still runs; the parser it hands to jsonargparse's CLI is that command's only, the same parser as in the whole
    CLI (a test compares what both parse from a config). A name that is not a command (--help, a typo) gets
    LitGPT's whole CLI, which says what there is."""
    cli = litgpt_cli.CLI
    if command in litgpt_cli.PARSER_DATA:
        litgpt_cli.CLI = lambda components, *args, **kwargs: cli({command: components[command]}, *args, **kwargs)
    try:
        yield
    finally:
        litgpt_cli.CLI = cli


if __name__ == "__main__":
    main()
