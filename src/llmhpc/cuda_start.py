"""Start CUDA in a thread while a job imports and reads its inputs.

A GPU job's first CUDA call creates the driver's context on its GPU and, at its first matrix product, cuBLAS's
handle and workspace: a second or more of a small job's wall, spent after the imports and before the load when
done in line. `begin` starts that work in a thread as soon as the job knows it will use a GPU; the thread's
calls release the GIL, so the imports and the reading go on beside it. `finish` waits for it.

The thread is not a daemon: an interpreter that ends while a thread is inside a CUDA call can die with SIGSEGV
at exit, so Python's own shutdown joins it first wherever a caller did not.
"""

from __future__ import annotations

import os
import threading

_thread: threading.Thread | None = None
LOCAL_RANK = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")  # torchrun, mpirun, srun


def local_rank() -> int:
    """This process's rank on its node, as its launcher tells it (0 for a plain process)."""
    for key in LOCAL_RANK:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def begin(rank: int | None = None) -> threading.Thread | None:
    """Start CUDA on the local rank's GPU in a thread (once per process); None where no GPU is visible."""
    global _thread
    if _thread is not None:
        return _thread
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return None
    rank = local_rank() if rank is None else rank

    def work() -> None:
        import torch

        try:
            if not torch.cuda.is_available():
                return
            device = torch.device("cuda", rank % torch.cuda.device_count())
            x = torch.ones(16, 16, device=device, dtype=torch.float32)
            torch.mm(x, x)  # cuBLAS's handle and workspace, made at the first matrix product
            torch.cuda.synchronize(device)
        except Exception:  # noqa: BLE001 - the job's own first CUDA call reports what is wrong, in its context
            return

    _thread = threading.Thread(target=work, name="cuda-start", daemon=False)
    _thread.start()
    return _thread


def finish() -> None:
    """Wait for `begin`'s thread, where one was started."""
    if _thread is not None:
        _thread.join()
