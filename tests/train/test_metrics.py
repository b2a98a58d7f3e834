"""A fine-tune's summary figures beyond litgpt's own report: samples/s (the ISC25 score), what ran (engine, method,
float8) and the attention backend the fsdp2 engine chose."""

import pytest

from llmhpc.train import metrics

# The ISC25 seed's batch: 16 per GPU x 8 GPUs x accumulation 2 = 256 samples per optimizer step.
ISC25 = {"devices": 8, "num_nodes": 1, "micro_batch_size": 16, "global_batch_size": 256, "method": "dora",
         "engine": "fsdp2", "float8": True, "precision": "bf16-true", "max_seq_length": 512}
ENGINE_LINE = ("Engine fsdp2 | packing=on micro_rows=16 (rows per micro batch: [16]) activation_checkpointing=off (auto)"
               " sharding=grad_op compile=on fused_adamw=on cross_entropy=chunked loss_weighting=micro_batch"
               " prefetch=on fast_save=on attention=flex | precision bf16-true | 8 process(es) via torchrun on cuda |"
               " 69 optimizer steps of 256 samples\n")
REPORT = "| - Training Time :  120.00 s\n| - Tok/sec :  100000.00 tok/s\n"


def summarise(stdout: str, iters: int, ft=ISC25) -> dict:
    rows = [{"loss": 1.0, "iter": float(i), "step": float(i)} for i in range(1, iters + 1)]
    return metrics.summarise(stdout, rows, ft, 150.0, 0, {"n_layer": 32, "n_embd": 4096}, "NVIDIA H100", None, 1.0)


def test_samples_per_second_is_steps_times_the_global_batch_over_training_time():
    s = summarise(ENGINE_LINE + REPORT, iters=69 * 2)  # 2 micro batches per step on each rank
    assert s["steps"] == 69
    assert s["samples_per_s"] == pytest.approx(69 * 256 / 120.0, abs=1e-3)
    assert s["tokens_per_s_per_device"] == pytest.approx(100000 / 8)
    assert (s["engine"], s["method"], s["float8"], s["max_seq_length"]) == ("fsdp2", "dora", True, 512)


def test_attention_is_what_the_engine_printed_and_nothing_for_stock():
    assert summarise(ENGINE_LINE + REPORT, iters=2)["attention"] == "flex"
    assert metrics.attention_backend("[rank: 0] " + ENGINE_LINE.replace("attention=flex", "attention=sdpa")) == "sdpa"
    # a finished run's log from before the engine's rename
    assert metrics.attention_backend(ENGINE_LINE.replace("Engine fsdp2 |", "Engine fast |")) == "flex"
    stock = {**ISC25, "engine": "litgpt", "method": "lora", "float8": False}
    s = summarise("Number of trainable parameters: 1,000\n" + REPORT, iters=2, ft=stock)
    assert s["attention"] is None and s["engine"] == "litgpt"


def test_no_samples_per_second_without_a_training_time():
    assert summarise(ENGINE_LINE, iters=4)["samples_per_s"] is None
    assert metrics.samples_per_s(None, 256, 10.0) is None


def test_the_engines_predicted_memory_sits_beside_the_measured_peak():
    predicted = "Predicted peak memory per GPU: 49.29 GB (weights, gradients and optimizer 26.95 GB; ...)\n"
    s = summarise(ENGINE_LINE + predicted + REPORT + "| - Memory Used               :  44.95 GB\n", iters=2)
    assert (s["predicted_memory_gb"], s["peak_memory_gb"]) == (49.29, 44.95)
    assert summarise(ENGINE_LINE + REPORT, iters=2)["predicted_memory_gb"] is None  # stock prints none


def test_the_fsdp2_engines_phases_add_up_to_the_stage_wall(tmp_path):
    """The engine's printed phases, start-up measured from the stage's own start to the engine's last import;
    exit is what the stage's wall leaves."""
    line = ('[rank0] Engine phases (s): {"startup_s": 2.0, "load_s": 2.5, "warmup_s": 4.0, "work_s": 18.25, '
            '"save_s": 3.5, "imported_at": 1000.0}')
    phases = metrics.job_phases(f"noise\n{line}\n", {"start": 997.0, "end": 1031.0}, 18.25, tmp_path, 34.0)
    assert phases == {"phase_startup_s": 3.0, "phase_load_s": 2.5, "phase_warmup_s": 4.0, "phase_work_s": 18.25,
                      "phase_save_s": 3.5, "phase_exit_s": 2.75}
    clockless = metrics.job_phases(line, {}, 18.25, tmp_path, 34.0)  # no stage mark: the engine's own start-up
    assert clockless["phase_startup_s"] == 2.0 and clockless["phase_exit_s"] == 3.75
    assert metrics.job_phases(line, {}, 18.25, tmp_path, 29.0)["phase_exit_s"] is None  # clocks that disagree
    # the job's process lived 1.5 s before its stage started the engine: start-up and the job's wall both hold it
    aged = metrics.job_phases(line, {"start": 997.0, "end": 1031.0}, 18.25, tmp_path, 34.0, before_s=1.5)
    assert aged["phase_startup_s"] == 4.5 and aged["phase_exit_s"] == 2.75


def test_stock_phases_come_from_its_marks_and_are_null_where_it_has_none(tmp_path):
    final = tmp_path / "final"
    final.mkdir()
    (final / "lit_model.pth").write_bytes(b"x")
    written = (final / "lit_model.pth").stat().st_mtime
    marks = {"start": written - 30.0, "setup_start": written - 22.0, "train_end": written - 2.0}
    phases = metrics.job_phases("", marks, 12.0, final, 31.0)
    assert phases == {"phase_startup_s": 8.0, "phase_load_s": 8.0, "phase_warmup_s": None, "phase_work_s": 12.0,
                      "phase_save_s": 2.0, "phase_exit_s": 1.0}
    unmarked = metrics.job_phases("", {"start": marks["start"], "train_end": marks["train_end"]}, 12.0, final, 31.0)
    assert unmarked["phase_startup_s"] is None and unmarked["phase_load_s"] is None
    assert unmarked["phase_exit_s"] is None and unmarked["phase_work_s"] == 12.0


def test_the_compile_decision_is_what_the_engine_printed_and_nothing_for_stock():
    line = "[rank0] Compile decision: eager: ~0.3 s of eager training planned per GPU, under the 15 s from which\n"
    assert summarise(ENGINE_LINE + line + REPORT, 4)["compile_decision"].startswith("eager: ~0.3 s of eager")
    assert summarise(REPORT, 4)["compile_decision"] is None
