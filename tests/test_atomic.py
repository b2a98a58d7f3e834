"""Outputs are written whole or not at all: a full filesystem during a save fails with a message naming the file
and the filesystem, and leaves the earlier version of the output untouched (a real tmpfs of 256 KB, as root)."""

import json
import os
import subprocess

import pytest

from llmhpc import atomic


@pytest.fixture
def small_filesystem(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.subprocess
def test_a_full_disk_fails_naming_the_filesystem_and_keeps_the_earlier_output(small_filesystem):
    target = small_filesystem / "results" / "summary.json"
    atomic.write_json(target, {"run": 1})
    with pytest.raises(atomic.DiskFullError) as err:
        atomic.write_text(target, "x" * 1_000_000)
    message = str(err.value)
    assert f"no space left writing {target}: the filesystem {small_filesystem} is full" in message
    assert f"{target} is unchanged" in message
    assert json.loads(target.read_text()) == {"run": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]  # no partial file left behind


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"acc": 0.5})
    with pytest.raises(KeyboardInterrupt):
        with atomic.replacing(target) as fh:
            fh.write('{"acc": 0.')
            raise KeyboardInterrupt  # Ctrl-C or a kill in the middle of the write
    assert json.loads(target.read_text()) == {"acc": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
