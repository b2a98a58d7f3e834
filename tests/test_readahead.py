"""Read-ahead of a checkpoint's weights while a process starts (llmhpc.readahead), and who asks for it."""

from __future__ import annotations

import os

import pytest
import yaml

from llmhpc import readahead


def record_advice(monkeypatch) -> list[tuple[str, int]]:
    seen = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, offset, length, advice: seen.append((os.readlink(f"/proc/self/fd/{fd}"), advice)))
    return seen


@pytest.mark.unit
def test_read_ahead_asks_for_lit_model_pth_else_the_safetensors_files(tmp_path, monkeypatch):
    seen = record_advice(monkeypatch)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x")
    (tmp_path / "tokenizer.json").write_text("{}")
    readahead.prefetch(tmp_path).join()
    assert seen == [(str(tmp_path / f"model-0000{i}-of-00002.safetensors"), os.POSIX_FADV_WILLNEED) for i in (1, 2)]
    seen.clear()
    (tmp_path / "lit_model.pth").write_bytes(b"x")
    readahead.prefetch(tmp_path).join()
    assert seen == [(str(tmp_path / "lit_model.pth"), os.POSIX_FADV_WILLNEED)]
    seen.clear()
    readahead.prefetch(tmp_path / "missing").join()  # nothing to read: nothing asked, no error
    assert seen == []


@pytest.mark.unit
@pytest.mark.parametrize("env,asks", [({}, True), ({"LOCAL_RANK": "0"}, True), ({"LOCAL_RANK": "1"}, False),
                                      ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, False), ({"SLURM_LOCALID": "0"}, True)])
def test_the_engine_s_first_process_on_a_node_reads_ahead(tmp_path, monkeypatch, env, asks):
    from llmhpc.train.fsdp2 import __main__ as entry

    for key in entry.LOCAL_RANK:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    seen = record_advice(monkeypatch)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/lit_model.pth").write_bytes(b"x")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"checkpoint_dir": str(tmp_path / "ckpt")}))
    started = []
    real = readahead.prefetch
    monkeypatch.setattr(readahead, "prefetch", lambda d: started.append(real(d)) or started[-1])
    entry.read_ahead(["python", "--config", str(tmp_path / "run.yaml")])
    for thread in started:
        thread.join()
    assert seen == ([(str(tmp_path / "ckpt/lit_model.pth"), os.POSIX_FADV_WILLNEED)] if asks else [])


@pytest.mark.unit
def test_read_ahead_leaves_a_missing_or_broken_yaml_to_the_engine(tmp_path):
    from llmhpc.train.fsdp2 import __main__ as entry

    entry.read_ahead(["python", "--config", str(tmp_path / "missing.yaml")])
    (tmp_path / "broken.yaml").write_text("checkpoint_dir: [unclosed\n")
    entry.read_ahead(["python", "--config", str(tmp_path / "broken.yaml")])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    entry.read_ahead(["python", "--config", str(tmp_path / "list.yaml")])
