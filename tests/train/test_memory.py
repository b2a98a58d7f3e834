"""The memory estimate the fsdp2 engine plans with and the preflight prints (llmhpc.train.memory)."""

import subprocess
import sys

import pytest

from llmhpc.train import memory

GB = memory.GB


@pytest.mark.litgpt
@pytest.mark.parametrize("name", ["pythia-14m", "pythia-160m", "Llama-2-7b-hf", "Llama-3.1-8B", "Mistral-7B-v0.1",
                                  "phi-2", "gemma-2b", "Qwen2.5-7B", "falcon-7b", "Platypus-30B"])
def test_parameters_are_counted_as_litgpt_builds_the_model(name):
    import torch
    from litgpt import GPT, Config

    config = Config.from_name(name)
    with torch.device("meta"):
        built = sum(p.numel() for p in GPT(config).parameters())
    assert memory.count_parameters(config) == built
    assert memory.shape_of(name).n_params == built


@pytest.mark.subprocess
def test_the_shape_is_read_without_importing_lightning_or_torch():
    """The preflight runs in every parse of the workflow; LitGPT's package imports Lightning (10-15 s)."""
    code = ("import sys; from llmhpc.train import memory; s = memory.shape_of('Llama-2-7b-hf'); "
            "print(s.n_params, 'lightning' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["6738415616", "False", "False"]


def test_a_checkpoint_config_gives_the_same_shape_as_its_name(tmp_path):
    (tmp_path / "model_config.yaml").write_text("name: pythia-14m\nhf_config: {org: EleutherAI, name: pythia-14m}\n"
                                                 "block_size: 512\nvocab_size: 50254\npadded_vocab_size: 50304\n"
                                                 "n_layer: 6\nn_head: 4\nn_embd: 128\nrotary_percentage: 0.25\n"
                                                 "parallel_residual: true\nbias: true\nnorm_class_name: LayerNorm\n"
                                                 "mlp_class_name: GptNeoxMLP\nintermediate_size: 512\n")
    assert memory.shape_of(config_file=tmp_path / "model_config.yaml") == memory.shape_of("pythia-14m")


@pytest.mark.parametrize("gpu, site_value, expected", [
    ("NVIDIA H200", None, 141), ("NVIDIA H100 80GB HBM3", None, 80), ("NVIDIA H100 NVL", None, 94),
    ("Tesla V100-SXM2-32GB", None, 32), ("V100", None, 16), ("NVIDIA A100-SXM4-80GB", None, 80), ("A100", None, 40),
    ("V100", 32, 32), ("Some GPU", None, None), (None, None, None)])
def test_gpu_memory_by_name_or_the_sites_value(gpu, site_value, expected):
    assert memory.gpu_memory_gb(gpu, site_value) == expected


def test_unsharded_weights_and_accumulated_gradients_count_only_where_they_are_held():
    n = 1_000_000_000
    full = memory.static_bytes(n, "bf16-true", "full", 4)
    assert full == 4 * n * 2 / 4  # weights, gradients, two AdamW states, each a quarter
    assert memory.static_bytes(n, "bf16-true", "grad_op", 4, accumulating=False) == full + n * 2  # gathered weights
    assert memory.static_bytes(n, "bf16-true", "grad_op", 4) == full + 2 * n * 2  # and whole gradients
    assert memory.static_bytes(n, "16-mixed", "none", 1) == 4 * n * 4  # fp32 weights
    assert memory.static_bytes(n, "bf16-true", "none", 1, method="lora") == n * 2  # frozen weights only


def test_auto_sharding_falls_back_to_full_where_the_gathered_model_would_not_fit():
    shape = memory.shape_of("Llama-2-7b-hf")

    def choose(precision, nodes, gpu_gb):
        return memory.choose_sharding(shape, shape.n_params, precision, "full", "auto", 4 * nodes, nodes,
                                      gpu_gb * GB, 0.85, 512)

    assert choose("bf16-true", 1, 141) == "grad_op"
    assert choose("bf16-true", 2, 141) == "hybrid"
    assert choose("16-mixed", 2, 32) == "full"  # Gadi's V100s: 27 GB sharded, 27 GB more gathered
    assert memory.choose_sharding(shape, shape.n_params, "16-mixed", "full", "hybrid", 8, 2, 32 * GB, 0.85,
                                  512) == "hybrid"  # asked for, kept (the preflight refuses it)


def test_the_prediction_plans_what_the_engine_would():
    shape = memory.shape_of("Llama-2-7b-hf")
    common = dict(precision="bf16-true", method="full", devices=4, num_nodes=1, sharding="auto", micro_rows="auto",
                  fraction=0.85, row_len=512, gpu_gb=141)
    p = memory.predict(shape, checkpointing="auto", rows_needed=8, **common)
    assert (p.sharding, p.checkpointing, p.rows, p.fits) == ("grad_op", False, 8, True)
    # 13.5 GB sharded + 13.5 GB gathered (one micro batch a step: no whole gradients) + 8 rows of activations
    assert p.static_gb == pytest.approx(4 * shape.n_params * 2 / 4 / GB + shape.n_params * 2 / GB)
    assert p.activations_gb == pytest.approx(8 * memory.row_bytes(shape, "bf16-true", False, "full", 512) / GB)
    forced = memory.predict(shape, checkpointing="on", rows_needed=8, **common)
    assert forced.checkpointing and forced.activations_gb < p.activations_gb / 5
    small = memory.predict(shape, checkpointing="auto", rows_needed=32, **dict(common, gpu_gb=80))
    assert small.rows < 32  # several micro batches a step: whole gradients held between them
    assert small.static_gb == pytest.approx(p.static_gb + shape.n_params * 2 / GB)
    assert not memory.predict(shape, checkpointing="auto", rows_needed=1, **dict(common, devices=1, gpu_gb=40)).fits
