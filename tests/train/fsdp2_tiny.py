"""A tiny LitGPT checkpoint, tokenizer and Alpaca-style data set, and the YAML both engines read (CPU, fp32)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

WORDS = ("the model data train token write list describe answer short long sample mask pack row step loss "
         "alpha beta gamma delta north south east west one two three four five six seven eight nine ten").split()


def write_tokenizer(ckpt: Path, vocab: int = 500) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    template = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n### Instruction:\n\n### Input:\n\n"
                "### Response:\n")
    tok.train_from_iterator([" ".join(WORDS)] * 8 + [template] * 8, trainer)
    tok.save(str(ckpt / "tokenizer.json"))
    (ckpt / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "tokenizer_class": "PreTrainedTokenizerFast"}))


def write_checkpoint(ckpt: Path, seed: int = 0) -> None:
    import torch
    from litgpt import GPT, Config
    from litgpt.utils import save_config

    ckpt.mkdir(parents=True, exist_ok=True)
    write_tokenizer(ckpt)
    config = Config(name="fsdp2-test-llama", block_size=256, vocab_size=512, padded_vocab_size=512, n_layer=2,
                    n_head=4, n_query_groups=2, n_embd=32, intermediate_size=64, rotary_percentage=1.0,
                    parallel_residual=False, bias=False, norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP")
    torch.manual_seed(seed)
    model = GPT(config)
    model.apply(model._init_weights)
    torch.save(model.state_dict(), ckpt / "lit_model.pth")
    save_config(config, ckpt)


def write_data(folder: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    def record():
        return {"instruction": text(2, 8), "input": text(0, 6) if rng.random() < 0.4 else "", "output": text(1, 24)}

    (folder / "train.json").write_text(json.dumps([record() for _ in range(n)]))
    (folder / "val.json").write_text(json.dumps([record() for _ in range(6)]))


def config(root: Path, out: str, *, gbs=8, mbs=2, steps=None, epochs=1, engine=None, devices=1, num_nodes=1,
           max_seq_length=96, final_validation=False, mask_prompt=False) -> Path:
    cfg = {
        "checkpoint_dir": str(root / "ckpt"), "out_dir": str(root / out), "precision": "32-true",
        "devices": devices, "num_nodes": num_nodes, "resume": False,
        "data": {"class_path": "litgpt.data.JSON",
                 "init_args": {"json_path": str(root / "data"), "mask_prompt": mask_prompt, "prompt_style": "alpaca",
                               "ignore_index": -100, "seed": 42, "num_workers": 0}},
        "train": {"save_interval": 1000000, "log_interval": 1, "global_batch_size": gbs, "micro_batch_size": mbs,
                  "lr_warmup_steps": 2, "epochs": epochs, "max_tokens": None, "max_steps": steps,
                  "max_seq_length": max_seq_length, "tie_embeddings": None, "max_norm": None, "min_lr": 6e-5},
        "eval": {"interval": 1000000, "max_new_tokens": 5, "max_iters": 2, "initial_validation": False,
                 "final_validation": final_validation},
        "logger_name": "csv", "seed": 1337,
        "optimizer": {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": 0.01, "weight_decay": 0.01, "betas": [0.9, 0.95]}},
    }
    if engine is not None:
        cfg["engine"] = engine
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def make(root: Path, n: int = 64) -> Path:
    write_checkpoint(root / "ckpt")
    write_data(root / "data", n)
    return root


def kill_once_whole(proc, marker: Path, timeout: float = 300) -> str:
    """SIGKILL proc (a run started with stdout=PIPE) as soon as `marker`, the last file of a step checkpoint,
    exists: a walltime kill in the middle of the run. Returns the run's output."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before {marker} was written:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {marker} within {timeout} s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run had finished before the kill"
    return out
