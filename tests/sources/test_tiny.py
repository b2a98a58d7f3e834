"""Source `tiny`: the random model written in Hugging Face format is the architecture LitGPT converts it as.

A full-size Llama-2-7b is too big for CI, so the Llama path is checked on a 2-layer model of the same family
registered under its own name in litgpt's config table: written by write_tiny_model, converted by litgpt's own
converter, and both models give the same logits for the same tokens.
"""

import dataclasses
import json

import pytest
import torch

from llmhpc.sources import tiny

pytestmark = [pytest.mark.litgpt]

SMALL_LLAMA = "llmhpc-test-llama"


@pytest.fixture
def small_llama(monkeypatch):
    import litgpt.config
    from litgpt import Config

    base = dataclasses.asdict(Config.from_name("Llama-2-7b-hf"))
    small = {k: v for k, v in base.items() if k in {f.name for f in dataclasses.fields(Config)} and k != "hf_config"}
    small.update(name=SMALL_LLAMA, n_layer=2, n_embd=64, n_head=4, n_query_groups=2, head_size=16,
                 intermediate_size=176, padded_vocab_size=512, vocab_size=512, block_size=128,
                 rope_base=50000)  # not transformers' default: the test sees whether it is carried over
    monkeypatch.setitem(litgpt.config.name_to_config, SMALL_LLAMA, small)
    return SMALL_LLAMA


def test_llama_7b_config_matches_litgpt(tmp_path):
    from litgpt import Config
    from transformers import AutoConfig

    (tmp_path / "config.json").write_text(json.dumps(tiny.hf_config("Llama-2-7b-hf")))
    hf, lit = AutoConfig.from_pretrained(tmp_path), Config.from_name("Llama-2-7b-hf")
    assert hf.model_type == "llama"
    assert (hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.num_key_value_heads) == (4096, 32, 32, 32)
    assert (hf.intermediate_size, hf.vocab_size) == (lit.intermediate_size, 32000)
    assert hf.rope_parameters["rope_theta"] == lit.rope_base


@pytest.mark.parametrize("name", ["pythia-14m", "Llama-2-7b-hf"])
def test_tensors_are_transformers_own_names_and_shapes(tmp_path, name):
    """Every tensor transformers' model of that config has, and no other, shaped as its are."""
    from transformers import AutoConfig, AutoModelForCausalLM

    (tmp_path / "config.json").write_text(json.dumps(tiny.hf_config(name)))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: shape for k, (shape, _) in tiny.tensor_shapes(tiny.hf_config(name)).items()} == expected


def test_pythia_shape_loads_in_transformers_and_converts_to_the_same_logits(tmp_path):
    """The embedded default's model, as transformers and litgpt's converter each read it."""
    from litgpt import GPT, Config
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint
    from transformers import AutoModelForCausalLM

    hf_dir = tmp_path / "hf"
    info = tiny.write_tiny_model(hf_dir, "pythia-14m", 300, seed=5)
    assert info["family"] == "gpt_neox" and info["parameters"] == 14067712
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    weights = dict(hf_model.named_parameters())
    assert weights["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(weights["gpt_neox.final_layer_norm.weight"], torch.ones(128))

    convert_hf_checkpoint(hf_dir, model_name="pythia-14m")
    lit = GPT(Config.from_name("pythia-14m"))
    lit.load_state_dict(torch.load(hf_dir / "lit_model.pth"), strict=True)
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(lit.eval()(ids), hf_model(ids).logits, rtol=1e-4, atol=1e-4)


def test_unsupported_architecture_names_the_key_and_the_way_out():
    with pytest.raises(ValueError, match=r"model.name 'Llama-3.2-1B'.*source 'hf' or 'path'"):
        tiny.hf_config("Llama-3.2-1B")  # rescaled RoPE


def test_llama_shape_converts_and_gives_the_same_logits(small_llama, tmp_path):
    from litgpt import GPT, Config
    from litgpt.scripts.convert_hf_checkpoint import convert_hf_checkpoint
    from transformers import AutoModelForCausalLM

    hf_dir = tmp_path / "hf"
    info = tiny.write_tiny_model(hf_dir, small_llama, 300, seed=7, dtype="bfloat16")
    assert info["family"] == "llama" and info["dtype"] == "bfloat16"
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    assert next(hf_model.parameters()).abs().sum() > 0

    convert_hf_checkpoint(hf_dir, model_name=small_llama)
    lit = GPT(Config.from_name(small_llama))
    lit.load_state_dict(torch.load(hf_dir / "lit_model.pth"), strict=True)
    lit = lit.float().eval()

    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = hf_model(ids).logits
        got = lit(ids)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    a = tiny.write_tiny_model(tmp_path / "a", "pythia-14m", 300, seed=3)
    tiny.write_tiny_model(tmp_path / "b", "pythia-14m", 300, seed=3)
    wa, wb = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert a["family"] == "gpt_neox" and wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
