"""The embedded default's model: a random-initialised model of a LitGPT-known architecture, written in
Hugging Face format with a BPE tokenizer trained here, so that the convert stage runs litgpt's real converter.

Two families are written: GPT-NeoX (Pythia, the smallest architectures LitGPT knows by name, for the embedded
default) and Llama (Llama-2-7b-hf, TinyLlama, ...: a full-size rehearsal of a fine-tune's time and memory
before the real weights arrive; throughput does not depend on the weights' values). Llama variants whose
RoPE is rescaled (Llama 3.1+) are refused: the random model would not match their converted config.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmhpc.sources import embedded

SPECIAL = "<|endoftext|>"


def corpus() -> list[str]:
    """Text the tokenizer is trained on: the embedded sets and the Alpaca prompt template around them."""
    train, val = embedded.finetune_records()
    texts = [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n\n### Input:\n\n### Response:\n"
    ]
    texts += [" ".join(r.values()) for r in train + val]
    for item in embedded.eval_records():
        texts.append(" ".join([item["activity_label"], item["ctx"], *item["endings"]]))
    return texts


def train_tokenizer(vocab_size: int):
    """Byte-level BPE (as GPT-NeoX's), so every string is encodable; id 0 is <|endoftext|> (BOS and EOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def hf_config(model_name: str):
    """transformers config matching litgpt's Config.from_name(model_name)."""
    from litgpt import Config
    from transformers import GPTNeoXConfig, LlamaConfig

    cfg = Config.from_name(model_name)
    common = dict(vocab_size=cfg.padded_vocab_size, hidden_size=cfg.n_embd, num_hidden_layers=cfg.n_layer,
                  num_attention_heads=cfg.n_head, intermediate_size=cfg.intermediate_size,
                  max_position_embeddings=cfg.block_size, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)
    if cfg.mlp_class_name == "GptNeoxMLP" and cfg.parallel_residual:
        return GPTNeoXConfig(**common, rotary_pct=cfg.rotary_percentage, rotary_emb_base=cfg.rope_base,
                             use_parallel_residual=True, layer_norm_eps=cfg.norm_eps, hidden_act="gelu")
    llama_like = (cfg.mlp_class_name == "LLaMAMLP" and cfg.norm_class_name == "RMSNorm" and not cfg.bias
                  and not cfg.parallel_residual and cfg.rotary_percentage == 1.0
                  and not getattr(cfg, "rope_adjustments", None) and cfg.head_size * cfg.n_head == cfg.n_embd)
    if llama_like:
        return LlamaConfig(**common, num_key_value_heads=cfg.n_query_groups, rms_norm_eps=cfg.norm_eps,
                           rope_theta=cfg.rope_base, hidden_act="silu", attention_bias=False, mlp_bias=False)
    raise ValueError(
        f"model.name '{model_name}': source 'tiny' writes GPT-NeoX (pythia-*) and Llama shapes without rescaled"
        " RoPE (Llama-2-7b-hf, tiny-llama-1.1b) only; use source 'hf' or 'path' for other architectures"
    )


def _parameters(config) -> int:
    """Parameter count of a transformers config's model, without building it."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def write_tiny_model(out_dir: Path, model_name: str, vocab_size: int, seed: int, dtype: str = "float32") -> dict:
    """Write config.json, model.safetensors and tokenizer files to out_dir; return a short description.
    dtype bfloat16 halves the files of a full-size model (the dtype its real weights come in)."""
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = hf_config(model_name)
    torch.manual_seed(seed)
    # Initialised in the dtype it is written in (a 7B model in float32 would need 28 GB of memory first),
    # through the default dtype, which transformers 4 and 5 both honour.
    # Shapes of billions of parameters are initialised on the GPU where there is one (a 7B model: seconds
    # instead of minutes on 16 cores); the seed then gives the same weights on the same kind of device.
    parameters = _parameters(config)
    device = "cuda" if torch.cuda.is_available() and parameters > 1e9 else "cpu"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    finally:
        torch.set_default_dtype(previous)
    model = model.cpu()
    model.save_pretrained(out_dir, safe_serialization=True)

    tok = train_tokenizer(vocab_size)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL,
        "eos_token": SPECIAL,
        "unk_token": SPECIAL,
        "add_bos_token": False,
        "model_max_length": config.max_position_embeddings,
    }, indent=1) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": SPECIAL, "eos_token": SPECIAL, "unk_token": SPECIAL}, indent=1) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}) + "\n")
    return {
        "architecture": model_name,
        "family": config.model_type,
        "dtype": dtype,
        "parameters": parameters,
        "tokenizer_vocab": tok.get_vocab_size(),
        "seed": seed,
        "initialised_on": device,
    }
