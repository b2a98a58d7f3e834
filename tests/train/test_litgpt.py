"""The finetune stage's pieces: the LitGPT YAML it writes, the figures it reads back, the MFU it derives."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import SCHEMA, default_config
from llmhpc.config import check, load_schema
from llmhpc.stages import finetune
from llmhpc.train import litgpt, metrics


def settings(**over):
    cfg = default_config()
    exps = check(cfg, load_schema(SCHEMA))
    ft = dict(exps["baseline"]["finetune"], **over)
    return ft


def test_litgpt_yaml_has_config_hub_layout_and_our_values(tmp_path):
    ft = settings(micro_batch_size=4, extra={"train": {"save_interval": 5}, "eval": {"interval": 3}})
    path = tmp_path / "litgpt.yaml"
    litgpt.write_litgpt_config(path, ft, "ckpt", "data", "out", experiment="x")
    cfg = yaml.safe_load(path.read_text())
    assert cfg["train"]["micro_batch_size"] == 4
    assert cfg["train"]["global_batch_size"] == ft["global_batch_size"]
    assert cfg["train"]["save_interval"] == 5  # extra wins
    assert cfg["eval"]["interval"] == 3 and cfg["eval"]["final_validation"] is True  # merged, not replaced
    assert cfg["optimizer"]["init_args"]["betas"] == [0.9, 0.95]
    assert cfg["data"]["class_path"] == "litgpt.data.JSON"


# `python -m litgpt finetune_<method> --config <file> --print_config` for each method, one after the other in one
# interpreter (litgpt's own entry point, run as `-m litgpt` runs it): importing litgpt once, not once per method.
# Then the same through llmhpc.train.stock_run, as the finetune stage runs stock LitGPT (its parser for the one
# command named): it must print the same config.
_PRINT_CONFIGS = """
import contextlib, io, json, runpy, sys
results, paths = {}, json.loads(sys.argv[1])
for entry in ("litgpt", "llmhpc.train.stock_run"):
    for method, path in paths.items():
        sys.argv = ["litgpt", f"finetune_{method}", "--config", path, "--print_config"]
        out, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_module(entry, run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        results[f"{entry} {method}"] = {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""
METHODS = ("full", "lora")


@pytest.fixture(scope="module")
def printed_configs(tmp_path_factory) -> dict:
    """{method: litgpt's exit code, stdout and stderr} for the YAML the stage writes for that method."""
    tmp = tmp_path_factory.mktemp("print_config")
    paths = {}
    for method in METHODS:
        paths[method] = str(tmp / f"{method}.yaml")
        litgpt.write_litgpt_config(tmp / f"{method}.yaml", settings(method=method), tmp, tmp, tmp / "out",
                                   experiment="x")
    proc = subprocess.run([sys.executable, "-c", _PRINT_CONFIGS, json.dumps(paths)], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.litgpt
@pytest.mark.parametrize("method", METHODS)
def test_litgpt_cli_accepts_the_yaml(printed_configs, method):
    """litgpt's own argument parser reads the file (jsonargparse --print_config parses without training)."""
    proc, ours = printed_configs[f"litgpt {method}"], printed_configs[f"llmhpc.train.stock_run {method}"]
    assert proc["returncode"] == 0 == ours["returncode"], proc["stderr"][-3000:] + ours["stderr"][-3000:]
    printed = yaml.safe_load(proc["stdout"])
    assert yaml.safe_load(ours["stdout"]) == printed  # the one-command parser parses as LitGPT's whole CLI
    assert printed["train"]["micro_batch_size"] == 8
    if method == "lora":
        assert printed["lora_r"] == 8


def test_parse_stdout_reads_litgpts_own_report():
    from litgpt.utils import create_finetuning_performance_report

    counts = {"raw_tokens": 1000, "raw_tokens_plus_prompt_template": 1500,
              "raw_tokens_plus_prompt_template_and_padding": 2000}
    report = create_finetuning_performance_report(12.5, counts, "cpu")
    text = "Number of trainable parameters: 14,067,712\n" + report + "Final evaluation | val loss: 2.251 | val ppl: 9.5\n"
    got = litgpt.parse_stdout(text)
    assert got == {"training_time_s": 12.5, "tokens_per_s": 160.0, "input_tokens": 1000,
                   "tokens_with_prompt": 1500, "tokens_with_padding": 2000,
                   "trainable_parameters": 14067712, "final_val_loss": 2.251}


def test_mfu_against_known_peak():
    # Llama-2-7b shape at 4,135 tok/s over 2 ranks (the reference bench on 2 x H200), 512-token sequences
    ft = {"devices": 2, "num_nodes": 1, "micro_batch_size": 4, "method": "full", "precision": "bf16-true",
          "global_batch_size": 64}
    stdout = ("Number of trainable parameters: 6,738,415,616\n| - Training Time :  82.80 s\n"
              "| - Tok/sec :  4135.00 tok/s\n| - Total Tokens (w/ Padding) :  342378\n")
    rows = [{"loss": 1.0, "iter": 128.0, "step": 16.0}]
    facts = {"n_layer": 32, "n_embd": 4096}
    s = metrics.summarise(stdout, rows, ft, 150.0, 0, facts, "NVIDIA H200", None, 1.0)
    seq = 342378 / (128 * 4 * 2)
    expected = (6 * 6_738_415_616 + 12 * 32 * 4096 * seq) * 4135 / 2 / 1e12 / 790
    assert s["mfu"] == pytest.approx(expected, abs=1e-4)
    assert s["tokens_per_s_per_device"] == pytest.approx(2067.5)
    assert metrics.summarise(stdout, rows, ft, 150.0, 0, facts, None, None, 1.0)["mfu"] is None  # CPU: unknown peak
    # an adapter method: the frozen base has no weight gradients, so 4 N (litgpt reports frozen parameters apart)
    lora = {**ft, "method": "lora"}
    stdout_lora = stdout.replace("6,738,415,616", "4,194,304") + "Number of non-trainable parameters: 6,734,221,312\n"
    expected_lora = (4 * 6_738_415_616 + 12 * 32 * 4096 * seq) * 4135 / 2 / 1e12 / 790
    assert metrics.summarise(stdout_lora, rows, lora, 150.0, 0, facts, "NVIDIA H200", None, 1.0)["mfu"] == \
        pytest.approx(expected_lora, abs=1e-4)


def test_peak_lookup():
    assert metrics.peak_tflops("Tesla V100-SXM2-32GB", "16-mixed", None) == 125.0
    assert metrics.peak_tflops("NVIDIA A100-SXM4-80GB", "32-true", None) == 19.5
    assert metrics.peak_tflops("NVIDIA A100", "bf16-true", 250.0) == 250.0
    assert metrics.peak_tflops(None, "bf16-true", None) is None


# A stand-in for litgpt's process with known phase lengths: start-up, training, litgpt's own report (made here
# by litgpt, so the marks match its real format), the final validation, then the final save into out/final
# (weights first, then the config files). The child imports nothing heavy, so its start-up is short.
_PHASED = r"""
import sys, time
from pathlib import Path
final, report = Path(sys.argv[1]), sys.argv[2]
time.sleep(0.6)                      # load
time.sleep(0.5)                      # training: the report says 0.50 s
print(report)
time.sleep(0.3)                      # final validation
print("Final evaluation | val loss: 2.000 | val ppl: 7.389")
final.mkdir(parents=True)
time.sleep(0.4); (final / "lit_model.pth").write_bytes(b"w")
time.sleep(0.2); (final / "model_config.yaml").write_text("x")
time.sleep(0.3)                      # exit: neither load nor save
"""


@pytest.mark.subprocess
def test_phase_times_from_a_real_process(tmp_path):
    from litgpt.utils import create_finetuning_performance_report

    counts = {"raw_tokens": 1, "raw_tokens_plus_prompt_template": 1,
              "raw_tokens_plus_prompt_template_and_padding": 1}
    report = create_finetuning_performance_report(0.5, counts, "cpu")
    final = tmp_path / "out/final"
    marks = {}
    cmd = [sys.executable, "-c", _PHASED, str(final), report]
    code, wall, _ = finetune.run(cmd, tmp_path / "stdout", lambda m: None, marks)
    assert code == 0
    training = litgpt.parse_stdout((tmp_path / "stdout").read_text())["training_time_s"]
    assert training == 0.5
    times = metrics.phase_times(marks, training, final)
    # load = start-up + 0.6 s; save = the 0.6 s of sleeps between the last line and the last file. The kernel
    # stamps a file's mtime from a coarse clock (a tick, up to ~10 ms, behind time.time()): 0.597 s was seen
    coarse = 0.02
    assert 0.6 - coarse <= times["load_s"] < 0.6 + 3
    assert 0.6 - coarse <= times["save_s"] < 0.6 + 0.5
    assert times["load_s"] + training + 0.3 + times["save_s"] + 0.3 <= wall + 0.05


def test_phase_times_without_marks_or_files(tmp_path):
    final = tmp_path / "final"
    assert metrics.phase_times({}, 10.0, final) == {"load_s": None, "save_s": None}
    final.mkdir()
    (final / "lit_model.pth").write_bytes(b"w")
    mtime = (final / "lit_model.pth").stat().st_mtime
    # no final validation: the save starts when training ends
    got = metrics.phase_times({"start": mtime - 20, "train_end": mtime - 3}, 12.0, final)
    assert got == {"load_s": 5.0, "save_s": 3.0}
    # a node whose clock runs behind: no negative spans
    got = metrics.phase_times({"start": mtime - 5, "train_end": mtime + 3}, 12.0, final)
    assert got == {"load_s": None, "save_s": None}


def test_parameter_count_from_litgpts_report_is_the_models_own(tmp_path):
    """The summary's parameter count (for MFU) comes from litgpt's stdout, not from building the model in the
    job; it must be the count of the architecture itself, for a full fine-tune and for LoRA (trainable +
    frozen). The shape comes from model_config.yaml."""
    import dataclasses

    import torch
    from litgpt import GPT, Config

    config = Config.from_name("pythia-14m")
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))
    with torch.device("meta"):
        built = sum(p.numel() for p in GPT(config).parameters())
    facts = metrics.model_facts(tmp_path)
    assert facts == {"n_layer": 6, "n_embd": 128, "name": "pythia-14m"}
    ft = {"devices": 1, "num_nodes": 1, "micro_batch_size": 4, "method": "full", "precision": "32-true",
          "global_batch_size": 16}
    full = f"Number of trainable parameters: {built:,}\n"
    lora = f"Number of trainable parameters: 1,000\nNumber of non-trainable parameters: {built - 1000:,}\n"
    for stdout in (full, lora):
        assert metrics.summarise(stdout, [], ft, 1.0, 0, facts, None, None, 1.0)["parameters"] == built


@pytest.mark.subprocess
def test_gpu_name_without_a_visible_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert metrics.gpu_name() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: a CPU node
    assert metrics.gpu_name() is None
