"""A fine-tune's summary figures beyond litgpt's own report: samples/s (the ISC25 score), what ran (engine, method,
float8) and the attention backend the fsdp2 engine chose."""

import pytest

from llmhpc.train import metrics

# The ISC25 seed's batch: 16 per GPU x 8 GPUs x accumulation 2 = 256 samples per optimizer step.
ISC25 = {"devices": 8, "num_nodes": 1, "micro_batch_size": 16, "global_batch_size": 256, "method": "dora",
         "engine": "fsdp2", "float8": True, "precision": "bf16-true", "max_seq_length": 512}
ENGINE_LINE = ("Engine fast | packing=on micro_rows=16 (rows per micro batch: [16]) activation_checkpointing=off (auto)"
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
