"""A fine-tune's summary figures beyond litgpt's own report: samples/s (the ISC25 score), what ran (engine, method,
float8) and the attention backend the fsdp2 engine chose."""

import json

import pytest

from llmhpc.settings import FinetuneSettings
from llmhpc.sources.embedded import shipped_dir
from llmhpc.train import metrics

# The ISC25 seed's batch: 16 per GPU x 8 GPUs x accumulation 2 = 256 samples per optimizer step.
ISC25 = {"devices": 8, "num_nodes": 1, "micro_batch_size": 16, "global_batch_size": 256, "method": "dora",
         "engine": "fsdp2", "float8": True, "precision": "bf16-true", "max_seq_length": 512}
ENGINE_LINE = ("Engine fsdp2 | packing=on micro_rows=16 (rows per micro batch: [16]) activation_checkpointing=off (auto)"
               " sharding=grad_op compile=on fused_adamw=on cross_entropy=chunked loss_weighting=micro_batch"
               " prefetch=on fast_save=on attention=flex | precision bf16-true | 8 process(es) via torchrun on cuda |"
               " 69 optimizer steps of 256 samples\n")
REPORT = "| - Training Time :  120.00 s\n| - Tok/sec :  100000.00 tok/s\n"


def summarise(stdout: str, iters: int, ft=ISC25, first: int = 1, **kwargs) -> dict:
    rows = [{"loss": 1.0, "iter": float(i), "step": float(i)} for i in range(first, iters + 1)]
    return metrics.summarise(stdout, rows, ft, 150.0, 0, {"n_layer": 32, "n_embd": 4096}, "NVIDIA H100", None, 1.0,
                             **kwargs)


def test_samples_per_second_is_the_records_trained_over_training_time():
    s = summarise(ENGINE_LINE + REPORT, iters=69 * 2, train_records=69 * 256)  # 2 micro batches a step on each rank
    assert s["steps"] == 69 and s["train_records"] == s["trained_samples"] == 69 * 256
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
    assert summarise(ENGINE_LINE, iters=4, train_records=1000)["samples_per_s"] is None
    assert metrics.samples_per_s(None, 10.0) is None


# The embedded default: 232 training records (src/llmhpc/embedded/train.json), global batch 16, one process.
EMBEDDED = {"devices": 1, "num_nodes": 1, "global_batch_size": 16, "method": "full", "engine": "litgpt",
            "precision": "32-true", "epochs": 1, "max_steps": None}


@pytest.mark.parametrize(("micro", "iters", "steps"), [
    (8, 29, 14),  # 2 micro batches a step: the 29th (8 samples) runs in the timed loop, no step is taken on it
    (16, 15, 15),  # 1 a step: the 15th holds the last 8 samples
])
def test_the_embedded_default_counts_its_232_records_whatever_the_micro_batch(micro, iters, steps):
    """Not optimizer steps x the global batch, which says 14 x 16 = 224 for micro batch 8 and 15 x 16 = 240 for
    micro batch 16: both runs trained the same 232 records, and their scores differ only by their times."""
    s = summarise(REPORT, iters=iters, ft={**EMBEDDED, "micro_batch_size": micro}, train_records=232)
    assert s["steps"] == steps and s["trained_samples"] == 232
    assert s["samples_per_s"] == round(232 / 120.0, 3)


def test_a_run_that_max_steps_stops_counts_max_steps_of_the_global_batch():
    ft = {**EMBEDDED, "micro_batch_size": 8, "max_steps": 5}
    s = summarise(REPORT, iters=10, ft=ft, train_records=232)
    assert s["trained_samples"] == 5 * 16 and s["samples_per_s"] == round(80 / 120.0, 3)
    settings = FinetuneSettings.from_dict
    # two epochs of 232 cut at step 20 (320 of 464 samples); max_steps beyond the data: the epoch stops it
    assert metrics.trained_samples(settings({**ft, "epochs": 2, "max_steps": 20}), 232) == 320
    assert metrics.trained_samples(settings({**ft, "max_steps": 100}), 232) == 232
    assert metrics.trained_samples(settings({**ft, "max_steps": 14}), 232) == 224  # stops before the 29th
    # records unknown: a run that reached max_steps is still counted, one that ran its epochs is not
    assert metrics.trained_samples(settings(ft), None, steps=5) == 80
    assert metrics.trained_samples(settings(ft), None, steps=4) is None
    assert metrics.trained_samples(settings({**ft, "max_steps": None}), None, steps=14) is None
    assert summarise(REPORT, iters=29, ft={**ft, "max_steps": None})["samples_per_s"] is None


def test_a_resumed_run_counts_the_samples_of_the_whole_run_over_every_attempt():
    """The embedded default at micro batch 8, killed after step 7 and resumed from step 5: the last attempt logs
    iterations 11-29 in 120 s, the killed one trained 4 s. The run trained 232 samples (the steps done again are
    lost time, not more samples) over 124 s."""
    from llmhpc.train import attempts

    ft = {**EMBEDDED, "micro_batch_size": 8}
    s = summarise(REPORT, iters=29, ft=ft, first=11, start_iter=10, train_records=232)
    s["resumed_from_step"] = 5
    history = {"killed": [{"start_step": 0, "steps": 7, "training_time_s": 4.0, "lost_time_s": 1.0}],
               "current": {"start_step": 5}}
    s.update(attempts.whole_run(history, s, 1))
    assert s["steps"] == 14 and s["trained_samples"] == 232 and s["attempts"] == 2
    assert s["training_time_s"] == 124.0 and s["samples_per_s"] == round(232 / 124.0, 3)


def test_the_training_records_are_those_of_the_data_the_yaml_names(tmp_path):
    record = {"instruction": "i", "input": "", "output": "o"}
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/train.json").write_text(json.dumps([record] * 232))
    (tmp_path / "dir/val.json").write_text(json.dumps([record] * 8))
    (tmp_path / "lines").mkdir()
    (tmp_path / "lines/train.jsonl").write_text((json.dumps(record) + "\n") * 21)
    (tmp_path / "one.json").write_text(json.dumps([record] * 232))

    def yaml_of(path, **args):
        return {"data": {"class_path": "litgpt.data.JSON", "init_args": {"json_path": str(path), **args}}}

    assert metrics.train_records_of(yaml_of(tmp_path / "dir")) == 232
    assert metrics.train_records_of(yaml_of(shipped_dir())) == 232  # the embedded default the cases above stand for
    assert metrics.train_records_of(yaml_of(tmp_path / "lines")) == 21
    # one file: litgpt splits off val_split_fraction (0.05 unless set) with torch's random_split sizes
    assert metrics.train_records_of(yaml_of(tmp_path / "one.json")) == 221
    assert metrics.train_records_of(yaml_of(tmp_path / "one.json", val_split_fraction=0.15)) == 198
    assert metrics.train_records_of(yaml_of(tmp_path / "missing")) is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/train.json").write_text("[{")  # the run is done: no count rather than no summary
    assert metrics.train_records_of(yaml_of(tmp_path / "broken")) is None
    assert metrics.train_records_of({"data": {"class_path": "litgpt.data.Alpaca2k"}}) is None
    assert metrics.train_records_of({}) is None


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
