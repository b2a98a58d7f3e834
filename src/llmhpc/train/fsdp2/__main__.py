"""`python -m llmhpc.train.fsdp2 --config <litgpt finetune_full YAML>`: the fsdp2 fine-tune engine (engine.py).

A plain process asked for several devices on one node re-executes itself under torchrun before anything heavy
is imported (as LitGPT starts its own processes); under torchrun, srun or mpirun it runs as one rank.
"""

import os
import sys

import yaml

LAUNCHED = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
LOCAL_RANK = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")  # torchrun, mpirun, srun


def config_of(argv: list[str]) -> dict:
    with open(argv[argv.index("--config") + 1]) as fh:
        return yaml.safe_load(fh) or {}


def respawn_if_needed(argv: list[str]) -> None:
    """exec torchrun for `devices` processes when no launcher started this one and the YAML asks for several."""
    if any(k in os.environ for k in LAUNCHED) or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return
    if "--config" not in argv or os.environ.get("LLMHPC_FSDP2_NO_RESPAWN") == "1":
        return
    cfg = config_of(argv)
    devices, nodes = cfg.get("devices", 1), int(cfg.get("num_nodes", 1))
    if isinstance(devices, int) and devices > 1 and nodes == 1:
        os.environ.setdefault("LLMHPC_FSDP2_LAUNCH_TIME", repr(__import__("time").time()))
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc-per-node={devices}", "-m", "llmhpc.train.fsdp2", *argv[1:]])


def read_ahead(argv: list[str]) -> None:
    """This node's first process starts reading the checkpoint's weights into the page cache while the imports
    (torch, LitGPT: 10-15 s) run, so that the load finds them there."""
    local = next((os.environ[k] for k in LOCAL_RANK if k in os.environ), "0")
    if local != "0" or "--config" not in argv:
        return
    try:
        cfg = config_of(argv)
    except (OSError, yaml.YAMLError):
        return  # the engine's own reading of the YAML says what is wrong with it
    if isinstance(cfg, dict) and cfg.get("checkpoint_dir"):
        from llmhpc.readahead import prefetch

        prefetch(cfg["checkpoint_dir"])


if __name__ == "__main__":
    os.environ.setdefault("LLMHPC_FSDP2_LAUNCH_TIME", repr(__import__("time").time()))
    # Packed micro batches come in a few row counts; with fixed-size segments the caching allocator fragments
    # between them (8B full fine-tune, 2 x H200: 122.9 GB peak with two shapes; a run with a third ran out of memory).
    # Expandable segments (as torchtitan sets them) grow one mapping instead. Set before CUDA starts; a user's
    # own PYTORCH_CUDA_ALLOC_CONF wins.
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    respawn_if_needed(sys.argv)
    read_ahead(sys.argv)
    from llmhpc.train.fsdp2.engine import setup

    setup()
