"""The training data, step by step: the same samples per optimizer step as stock LitGPT, optionally packed.

Stock `litgpt finetune_full` (one process) draws micro batches of `micro_batch_size` samples from the data
module's shuffled DataLoader, pads each to its longest sample, and takes an optimizer step every
`global_batch_size / micro_batch_size` micro batches. The plan below replays that order exactly (the same
DataLoader arguments and generator, over indices), so step s trains on the same samples here on any number of
GPUs. Its loss (see `weights`) is stock's: the mean over the non-ignored target tokens of each stock micro batch,
averaged over the step's micro batches; `loss_weighting: token` instead takes the mean over all of the step's
target tokens.

With packing, a step's samples are laid end to end in rows of `max_seq_length` tokens. Each token keeps the
target and weight it has in the unpacked step, its position restarts at 0 in every sample (RoPE sees what it
would see alone) and a per-token document id lets attention mask every other sample out. Rows are dealt to the
GPUs and cut into micro batches of at most `micro_rows` rows; every GPU does the same number of micro batches.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

PAD_DOC = -1  # document id of padding tokens (they attend only among themselves and carry no loss)


@dataclass
class Sample:
    input_ids: torch.Tensor
    targets: torch.Tensor  # labels shifted left by one within the sample; the last position is ignored
    raw: int  # litgpt's "raw" token count (instruction + response, no template)


@dataclass
class Micro:
    """One micro batch of one rank: rows of equal length."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor  # float32 loss weight per token (0 where ignored)
    positions: torch.Tensor
    documents: torch.Tensor | None  # None: one sample per row, right-padded, plain causal attention


@dataclass
class Step:
    micros: list[list[list[int]]]  # per rank, per micro batch: rows, each a list of sample indices
    weight: dict[int, float]  # per sample: the weight of each of its target tokens
    samples: list[int] = field(default_factory=list)


def load_samples(data, tokenizer, train) -> tuple[list[Sample], object]:
    """Tokenize the data module's train split with litgpt's own SFTDataset (prompt style, masking, truncation)."""
    data.connect(tokenizer=tokenizer, batch_size=train.micro_batch_size, max_seq_length=train.max_seq_length)
    data.prepare_data()
    data.setup()
    dataset, ignore = data.train_dataset, getattr(data, "ignore_index", -100)
    samples = []
    for i in range(len(dataset)):
        item = dataset[i]
        ids, labels = item["input_ids"], item["labels"]
        targets = torch.cat([labels[1:], torch.tensor([ignore], dtype=labels.dtype)])
        samples.append(Sample(ids, targets, int(item["token_counts"]["raw"])))
    return samples, data


def stock_micro_batches(n: int, micro_batch_size: int, seed: int, epochs: int) -> list[list[int]]:
    """Sample indices of stock's micro batches in its order: the data module's DataLoader arguments over indices."""
    loader = DataLoader(range(n), batch_size=micro_batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), collate_fn=list)
    return [batch for _ in range(epochs) for batch in loader]


def micro_batches_per_step(train) -> int:
    """Stock's micro batches of one optimizer step in one process's order (global / micro), which the plan splits
    over the ranks: the one place the engine derives it from the YAML's train section."""
    return train.global_batch_size // train.micro_batch_size


def steps_total(n: int, train) -> tuple[int, int]:
    """(optimizer steps stock takes, the step count its LR schedule is built for), for one process's order:
    an epoch has ceil(n / micro_batch_size) micro batches and a step takes global/micro of them, across epochs."""
    per_epoch = math.ceil(n / train.micro_batch_size)
    accumulation = micro_batches_per_step(train)
    cap = train.max_steps or float("inf")
    return int(min(per_epoch * train.epochs // accumulation, cap)), int(min(per_epoch // accumulation * train.epochs, cap))


def weights(step_batches: list[list[int]], samples: list[Sample], ignore: int, mode: str) -> dict[int, float]:
    """Per-sample token weight such that sum(weight x token CE) is the step's loss."""
    counts = [[int((samples[i].targets != ignore).sum()) for i in b] for b in step_batches]
    if mode == "token":
        total = max(1, sum(map(sum, counts)))
        return {i: 1.0 / total for b in step_batches for i in b}
    out = {}
    for batch, c in zip(step_batches, counts):
        for i in batch:
            out[i] = 1.0 / (len(step_batches) * max(1, sum(c)))
    return out


def pack_rows(lengths: dict[int, int], capacity: int, n_rows: int | None = None) -> list[list[int]]:
    """Longest first, each into the emptiest row (n_rows given) or the first that fits (first-fit decreasing)."""
    order = sorted(lengths, key=lambda i: -lengths[i])
    rows: list[list[int]] = [[] for _ in range(n_rows or 0)]
    fill = [0] * len(rows)
    for i in order:
        if n_rows:
            r = min(range(n_rows), key=fill.__getitem__)
            if fill[r] + lengths[i] > capacity:
                return []
        else:
            r = next((r for r in range(len(rows)) if fill[r] + lengths[i] <= capacity), None)
            if r is None:
                rows.append([])
                fill.append(0)
                r = len(rows) - 1
        rows[r].append(i)
        fill[r] += lengths[i]
    return rows


def plan_step(batches: list[list[int]], samples: list[Sample], world: int, packing: bool, row_len: int,
              micro_rows: int, ignore: int, mode: str) -> Step:
    w = weights(batches, samples, ignore, mode)
    flat = [i for b in batches for i in b]
    if not packing:
        if len(batches) % world:
            raise ValueError(f"{len(batches)} micro batches per step do not split over {world} processes")
        per = [[[[i] for i in b] for b in batches[r::world]] for r in range(world)]
        return Step(per, w, flat)
    lengths = {i: len(samples[i].input_ids) for i in flat}
    needed = len(pack_rows(lengths, row_len))
    n_micro = math.ceil(needed / (world * micro_rows))
    rows_per = math.ceil(needed / (world * n_micro))
    rows = pack_rows(lengths, row_len, world * n_micro * rows_per) or pack_rows(lengths, row_len)
    rows += [[] for _ in range(world * n_micro * rows_per - len(rows))]
    per = [[rows[r::world][m * rows_per:(m + 1) * rows_per] for m in range(n_micro)] for r in range(world)]
    return Step(per, w, flat)


def plan(samples, train, world: int, packing: bool, row_len: int, micro_rows: int, data_seed: int,
         ignore: int, mode: str) -> list[Step]:
    batches = stock_micro_batches(len(samples), train.micro_batch_size, data_seed, train.epochs)
    per_step = micro_batches_per_step(train)
    n, _ = steps_total(len(samples), train)
    return [plan_step(batches[s * per_step:(s + 1) * per_step], samples, world, packing, row_len, micro_rows,
                      ignore, mode) for s in range(n)]


def collate(rows: list[list[int]], samples: list[Sample], weight: dict[int, float], packed: bool, row_len: int,
            ignore: int) -> Micro:
    """Tensors of one micro batch; unpacked rows are padded to the longest, as stock's collate does."""
    dims = shape(rows, samples, packed, row_len)
    ids, tgt = torch.zeros(dims, dtype=torch.long), torch.full(dims, ignore, dtype=torch.long)
    wts, pos = torch.zeros(dims, dtype=torch.float32), torch.zeros(dims, dtype=torch.long)
    doc = torch.full(dims, PAD_DOC, dtype=torch.int32)
    for r, row in enumerate(rows):
        at = 0
        for d, i in enumerate(row):
            s = samples[i]
            n = len(s.input_ids)
            ids[r, at:at + n], tgt[r, at:at + n] = s.input_ids, s.targets
            wts[r, at:at + n] = (s.targets != ignore).float() * weight[i]
            pos[r, at:at + n] = torch.arange(n)
            doc[r, at:at + n] = d
            at += n
    return Micro(ids, tgt, wts, pos, doc if packed else None)


def shape(rows: list[list[int]], samples: list[Sample], packed: bool, row_len: int) -> tuple[int, int]:
    return len(rows), (row_len if packed else max(len(samples[r[0]].input_ids) for r in rows))


def token_counts(steps: list[Step], samples: list[Sample], packed: bool, row_len: int) -> dict[str, int]:
    """litgpt's three token counts over all processes: raw, with the prompt template, computed (with padding)."""
    used = [i for s in steps for i in s.samples]
    computed = 0
    for s in steps:
        for rank in s.micros:
            for rows in rank:
                b, t = shape(rows, samples, packed, row_len)
                computed += b * t
    return {"raw_tokens": sum(samples[i].raw for i in used),
            "raw_tokens_plus_prompt_template": sum(len(samples[i].input_ids) for i in used),
            "raw_tokens_plus_prompt_template_and_padding": computed}


def to_device(micro: Micro, device: torch.device) -> Micro:
    pin = device.type == "cuda"
    move = (lambda t: t.pin_memory().to(device, non_blocking=True)) if pin else (lambda t: t.to(device))
    return Micro(*(None if t is None else move(t) for t in (micro.input_ids, micro.targets, micro.weights,
                                                             micro.positions, micro.documents)))


def batches(steps: list[Step], rank: int, samples, packed: bool, row_len: int, ignore: int, device,
            prefetch: bool):
    """Yield each step's micro batches of this rank, on the device; built ahead in a thread when prefetch is on."""

    def build(step: Step) -> list[Micro]:
        return [to_device(collate(rows, samples, step.weight, packed, row_len, ignore), device)
                for rows in step.micros[rank]]

    if not prefetch:
        for step in steps:
            yield build(step)
        return
    ready: queue.Queue = queue.Queue(maxsize=2)

    def worker() -> None:
        try:
            stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            for step in steps:
                if stream is None:
                    ready.put((build(step), None))
                    continue
                with torch.cuda.stream(stream):
                    micros = build(step)
                    event = torch.cuda.Event()
                    event.record(stream)
                ready.put((micros, event))
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
            # without this the loop would wait for a batch forever (a CUDA out-of-memory error in this thread
            # hangs the job until the scheduler kills it)
            ready.put((exc, None))

    threading.Thread(target=worker, daemon=True).start()
    for _ in steps:
        micros, event = ready.get()
        if isinstance(micros, BaseException):
            raise RuntimeError("building the next micro batches failed (engine.prefetch's thread)") from micros
        if event is not None:
            main = torch.cuda.current_stream(device)
            main.wait_event(event)
            for m in micros:  # memory made on the copy stream is now used on this one
                for t in (m.input_ids, m.targets, m.weights, m.positions, m.documents):
                    if t is not None:
                        t.record_stream(main)
        yield micros
