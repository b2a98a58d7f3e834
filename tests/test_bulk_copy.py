"""The batched copies give back every tensor bit for bit: a memory-mapped lit_model.pth of mixed dtypes and odd
sizes, a safetensors file whose tensors start at offsets no dtype is aligned to, row slices (a process's shard),
spans cut in pieces smaller than a tensor. The GPU path runs the same steps; here they run to the CPU."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from llmhpc import bulk_copy
from llmhpc.eval.loading import safetensors_views

pytestmark = pytest.mark.unit


def mixed_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "wte": torch.randn(37, 16, generator=g),
        "norm": torch.randn(16, generator=g).to(torch.bfloat16),
        "odd": torch.randn(7, generator=g).to(torch.float16),
        "qkv": torch.randn(48, 16, generator=g).to(torch.bfloat16),
        "steps": torch.arange(5, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 4),
        "head": torch.randn(16, 37, generator=g).t(),  # not contiguous: copied on its own
    }


def mapped(tmp_path, state) -> dict[str, torch.Tensor]:
    path = tmp_path / "lit_model.pth"
    torch.save({"model": state}, path)
    return torch.load(path, mmap=True, weights_only=True)["model"]


@pytest.mark.parametrize("piece_bytes", [64, 1000, bulk_copy.PIECE_BYTES])
def test_mapped_checkpoint_arrives_bit_for_bit(tmp_path, piece_bytes):
    state = mixed_state()
    got = dict(bulk_copy.to_device(mapped(tmp_path, state), "cpu", piece_bytes=piece_bytes, batched=True))
    assert set(got) == set(state)
    for name, want in state.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        assert torch.equal(got[name], want), name


def test_neighbours_in_a_mapped_file_share_spans(tmp_path):
    """The tensors of one file lie a zip header apart: a handful of spans, not one copy per tensor; tensors of
    separate allocations (pages apart) are never joined."""
    views = mapped(tmp_path, {f"w{i}": torch.full((256,), float(i)) for i in range(20)})
    assert len(bulk_copy.plan(views)) == 1
    apart = {f"t{i}": torch.full((1 << 16,), float(i)) for i in range(3)}
    spans = bulk_copy.plan(apart)
    for span in spans:
        first, *rest = span.items
        end = first[1].data_ptr() + first[1].numel() * 4
        for _, t in rest:  # joined only across less than a page
            assert t.data_ptr() - end < bulk_copy.GAP_BYTES + 1
            end = t.data_ptr() + t.numel() * 4


def test_a_shard_reads_only_its_rows(tmp_path):
    views = mapped(tmp_path, {"w": torch.arange(40.0).view(10, 4)})
    part = views["w"].narrow(0, 3, 4)  # rows 3-6, as a shard is cut
    (span,) = bulk_copy.plan({"w": part})
    assert span.end - span.start == 4 * 4 * 4  # four rows of four float32
    (name, got), = bulk_copy.to_device({"w": part}, "cpu", batched=True)
    assert torch.equal(got, torch.arange(12.0, 28.0).view(4, 4))


def test_unaligned_safetensors_tensors(tmp_path):
    """safetensors packs tensors end to end: after three bf16 values a float32 tensor starts 6 bytes in."""
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    b = torch.tensor([[4.0, 5.0], [6.0, 7.0]])
    header = {"a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]},
              "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [6, 22]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + a.view(torch.uint8).numpy().tobytes()
                     + b.view(torch.uint8).numpy().tobytes())
    got = dict(bulk_copy.to_device(safetensors_views(path), "cpu", batched=True))
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b)
