"""`litgpt.data.JSON`, the data module the workflow writes, without Lightning.

LitGPT's data modules subclass Lightning's LightningDataModule (litgpt/data/base.py imports Lightning, whose
import pulls torchmetrics and transformers: seconds of every job's start-up). The engine needs no DataLoader of
theirs, only the tokenized samples, so this module holds the same fields, the same split (torch's random_split
with the same generator) and the same tokenization as LitGPT's `JSON` and `SFTDataset`, with LitGPT's own
PromptStyle and Tokenizer. A data module other than JSON is LitGPT's own (args.instantiate); tests compare this
one with LitGPT's on the same files.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import random_split

CLASS_PATHS = ("litgpt.data.JSON", "litgpt.data.json_data.JSON", "JSON")


@dataclass
class JSON:
    """The fields and checks of litgpt.data.JSON, in its order (the hyperparameters file lists them so)."""

    json_path: Path
    mask_prompt: bool = False
    val_split_fraction: float | None = None
    prompt_style: Any = "alpaca"
    ignore_index: int = -100
    seed: int = 42
    num_workers: int = 4

    tokenizer: Any = field(default=None, init=False, repr=False)
    batch_size: int = field(default=1, init=False, repr=False)
    max_seq_length: int = field(default=-1, init=False, repr=False)
    train_dataset: Any = field(default=None, init=False, repr=False)
    test_dataset: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from litgpt.prompts import PromptStyle

        self.json_path = Path(self.json_path)
        if self.json_path.is_file() and self.val_split_fraction is None:
            self.val_split_fraction = 0.05
            warnings.warn("The `json_path` points to a single file and `val_split_fraction` was not set. "
                          "Defaulting to `val_split_fraction=0.05`.", UserWarning, stacklevel=2)
        if self.json_path.is_dir() and self.val_split_fraction is not None:
            raise ValueError(f"data.init_args.val_split_fraction: {self.json_path} is a directory (train.json and "
                             "val.json), so val_split_fraction must not be set")
        if not self.json_path.exists():
            raise FileNotFoundError(f"data.init_args.json_path: {self.json_path} does not exist (a JSON file, or a "
                                    "directory with train.json and val.json)")
        if isinstance(self.prompt_style, str):
            self.prompt_style = PromptStyle.from_name(self.prompt_style)

    def connect(self, tokenizer=None, batch_size: int = 1, max_seq_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_seq_length = -1 if max_seq_length is None else max_seq_length

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str = "") -> None:
        train, test = self.get_splits()
        self.train_dataset, self.test_dataset = (
            SFTItems(part, self.tokenizer, self.prompt_style, self.max_seq_length, self.mask_prompt,
                     self.ignore_index) for part in (train, test))

    def get_splits(self) -> tuple:
        if self.json_path.is_file():
            data = load_split(self.json_path)
            return random_split(data, [1.0 - self.val_split_fraction, self.val_split_fraction],
                                generator=torch.Generator().manual_seed(self.seed))
        train, val = self.find_split("train"), self.find_split("val")
        if train is None or val is None:
            raise FileNotFoundError(f"data.init_args.json_path: {self.json_path} has no train.json(l) and "
                                    "val.json(l)")
        return load_split(train), load_split(val)

    def find_split(self, name: str) -> Path | None:
        for suffix in (".json", ".jsonl"):
            if (self.json_path / f"{name}{suffix}").is_file():
                return self.json_path / f"{name}{suffix}"
        return None


def load_split(path: Path) -> list:
    with open(path, encoding="utf-8") as fh:
        if path.suffix == ".json":
            return json.load(fh)
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in fh]
    raise ValueError(f"{path}: unsupported format {path.suffix!r}; expected .json or .jsonl")


class SFTItems:
    """litgpt.data.SFTDataset's items: the prompt (in the prompt style) and the response with EOS, truncated to
    max_seq_length; labels the same, with the prompt masked where mask_prompt; the raw token count."""

    def __init__(self, data, tokenizer, prompt_style, max_seq_length: int, mask_prompt: bool, ignore_index: int):
        self.data, self.tokenizer, self.prompt_style = data, tokenizer, prompt_style
        self.max_seq_length, self.mask_prompt, self.ignore_index = max_seq_length, mask_prompt, ignore_index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> dict:
        example = self.data[idx]
        encode, limit = self.tokenizer.encode, self.max_seq_length
        prompt = encode(self.prompt_style.apply(prompt=example["instruction"], **example), max_length=limit)
        response = encode(example["output"], bos=False, eos=True, max_length=limit)
        ids = torch.cat((prompt, response)).type(torch.int64)
        if limit > 0:
            ids = ids[:limit]
        labels = ids.clone()
        if self.mask_prompt:
            labels[: len(prompt)] = self.ignore_index
        raw = len(encode(example["instruction"], max_length=limit)) + len(response)
        return {"input_ids": ids, "labels": labels,
                "token_counts": {"raw": raw, "raw_plus_prompt_template": len(ids)}}
