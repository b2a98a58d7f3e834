"""The fast scorer's compile warm-up: the block forward compiled on a stand-in block in a thread while the weights
load, the first batches scoring eager meanwhile (fast.Stage's compiled_ready); waited for before the process
exits; what the metrics say of it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from llmhpc.compiling import compiled_graphs
from llmhpc.eval import float8 as float8_scoring
from llmhpc.eval.fast import attention_mask, compiled_block


def warm_up(config, device, dtype: torch.dtype, backend: str = "inductor", shapes=((3, 37),),
            float8: bool = False) -> float:
    """Compile the block forward on a stand-in block (random weights, the model's shapes; float8 ones where the
    real blocks are: evaluate.float8) and stand-in batches, so that compiling runs while the real weights load;
    the scoring calls then find the compiled code (same code, same guards: inference mode, dtypes, weight types,
    device). Returns the seconds it took."""
    from litgpt.model import Block

    t = time.perf_counter()
    with torch.device(device):  # made outside inference mode, as the real blocks are (a guard checks it)
        block = Block(config, 0).to(dtype).eval()
    if float8:
        float8_scoring.quantize_blocks([block])
    fn = compiled_block(backend)
    with torch.inference_mode():
        _warm_calls(fn, block, config, device, dtype, shapes)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def _warm_calls(fn, block, config, device, dtype, shapes) -> None:
    for B, T in shapes:
        x = torch.randn(B, T, config.n_embd, device=device, dtype=dtype)
        cos = torch.randn(B, T, config.rope_n_elem, device=device, dtype=dtype)
        segments = torch.zeros(B, T, dtype=torch.long, device=device)
        segments[:, T // 2:] = 1 + torch.arange(T - T // 2, device=device) % 3
        fn(block, x, cos, cos.clone(), attention_mask(segments, dtype))


def start_warm_up(checkpoint: Path, device: str, precision: str, backend: str | None, float8: bool) -> dict:
    """Compile the block forward in a thread while the weights load and the first batches score eager
    (warm_up); state["ready"] is set once the compiled code can be used. {} when not compiling."""
    if backend is None:
        return {}
    from llmhpc.eval.loading import DTYPES

    if float8:
        float8_scoring.import_ahead()
    state: dict = {"ready": threading.Event()}
    # Dynamo is imported here, before the thread starts: imported by two threads at once (the warm-up's compile and
    # a torch reference op's lazy import in this one), a module of its import cycle is seen half made, and the run
    # died with ImportError (1 x H100, 2026-12-07: "cannot import name 'IndentedBuffer'")
    import torch._dynamo  # noqa: F401

    def work():
        try:
            state["graphs_before"] = compiled_graphs()  # the count is per process
            from litgpt import Config

            config = Config.from_file(checkpoint / "model_config.yaml")
            dtype = DTYPES.get(precision) or torch.float32
            state["seconds"] = round(warm_up(config, device, dtype, backend, float8=float8), 3)
            state["ready"].set()
        except Exception as err:  # noqa: BLE001 - reported, and the scorer stays eager
            state["error"] = err

    state["thread"] = threading.Thread(target=work, name="compile-warm-up", daemon=True)
    state["thread"].start()
    return state


def finish_warm_up(state: dict, log) -> float:
    """Wait for a compile warm-up still running when the scoring is done; the seconds waited. Left running, the
    thread was inside Dynamo, Inductor or a CUDA call while the interpreter tore the process down, and the job died
    with SIGSEGV after writing its results (the in-stage scorer returns to a script that exits normally)."""
    thread = state.get("thread")
    if thread is None or not thread.is_alive():
        return 0.0
    t = time.perf_counter()
    thread.join()
    waited = time.perf_counter() - t
    log(f"waited {waited:.1f} s for the compile warm-up to end before exiting")
    return waited


def compile_record(state: dict, backend: str | None, stage, log) -> dict:
    """What the metrics say of compiling: the backend, the warm-up's seconds, batches scored eager meanwhile,
    graphs compiled; a failed compile is logged (its batches all ran eager)."""
    if "error" in state:
        log(f"torch.compile failed ({type(state['error']).__name__}: {state['error']}); scored eager")
    return {"backend": backend if state.get("seconds") is not None else None, "requested": backend,
            "warm_up_s": state.get("seconds"), "eager_batches": stage.eager_batches,
            "graphs": compiled_graphs() - state["graphs_before"] if "graphs_before" in state else 0}
