"""Datasets: the shipped embedded sets are what the generator makes, and a bad record is named precisely."""

import json

import pytest
import yaml

from conftest import default_config, snakemake
from llmhpc.sources import embedded
from llmhpc.stages.data import DataError, check_alpaca, read_hellaswag


def test_shipped_sets_are_what_the_generator_makes(tmp_path):
    embedded.write(tmp_path)
    for name in ("train.json", "val.json", "hellaswag.jsonl"):
        assert (tmp_path / name).read_text() == (embedded.shipped_dir() / name).read_text(), name


def test_shipped_sets_have_the_real_schemas():
    train = check_alpaca(embedded.shipped_dir() / "train.json")
    assert set(train[0]) == {"instruction", "input", "output"}
    items = read_hellaswag(embedded.shipped_dir() / "hellaswag.jsonl")
    assert len(items) == 192
    assert all(len(i["endings"]) == 4 for i in items)
    golds = [int(i["label"]) for i in items]
    assert set(golds) == {0, 1, 2, 3}  # the right ending is not always in one place
    assert any("[title]" in i["ctx_a"] for i in items)  # preprocessing is exercised


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_alpaca_missing_field_names_file_record_field(tmp_path):
    path = _write(tmp_path / "train.json", [{"instruction": "a", "input": "", "output": "b"},
                                            {"instruction": "a", "input": ""}])
    with pytest.raises(DataError, match=r"train.json: record 1 \(0-based\): field 'output' is missing"):
        check_alpaca(path)


def test_alpaca_wrong_type(tmp_path):
    path = _write(tmp_path / "train.json", [{"instruction": 3, "input": "", "output": "b"}])
    with pytest.raises(DataError, match=r"record 0 \(0-based\): field 'instruction' must be a string, got int"):
        check_alpaca(path)


def test_hellaswag_bad_label_and_endings(tmp_path):
    good = json.loads((embedded.shipped_dir() / "hellaswag.jsonl").read_text().splitlines()[0])
    bad_label = dict(good, label="7")
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad_label) + "\n")
    with pytest.raises(DataError, match=r"eval.jsonl: record 1 \(0-based\): field 'label' is 7, outside 0..3"):
        read_hellaswag(path)
    path.write_text(json.dumps(dict(good, endings="one ending")) + "\n")
    with pytest.raises(DataError, match=r"record 0 \(0-based\): field 'endings' must be a list"):
        read_hellaswag(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"eval.jsonl: line 2 is not valid JSON"):
        read_hellaswag(path)


@pytest.mark.snakemake
def test_bad_record_in_a_configured_path_stops_snakemake_before_any_job(repo_copy):
    data = repo_copy / "mydata"
    data.mkdir()
    records = json.loads((embedded.shipped_dir() / "train.json").read_text())
    records[5] = {"instruction": "x", "input": ""}
    _write(data / "train.json", records)
    (data / "val.json").write_text((embedded.shipped_dir() / "val.json").read_text())
    cfg = default_config()
    cfg["data"]["finetune"] = {"source": "path", "path": "mydata"}
    (repo_copy / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(repo_copy, "--configfile", "c.yaml", check=False)
    assert proc.returncode != 0
    assert "mydata/train.json: record 5 (0-based): field 'output' is missing" in proc.stdout + proc.stderr
    assert not (repo_copy / "results/env").exists()
