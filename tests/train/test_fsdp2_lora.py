"""The fsdp2 engine's adapters against peft (the reference for LoRA and DoRA) on the same weights, in fp32 on CPU:
outputs, gradients, one AdamW step, the merged weight; torchao's NF4 base; the float8 and settings refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llmhpc.train.fsdp2 import adapters, converters
from llmhpc.train.fsdp2.args import EngineArgs, LoraArgs

IN, OUT, R, ALPHA = 48, 40, 4, 8
TOL = {"rtol": 1e-5, "atol": 1e-5}


class Toy(nn.Module):
    """One projection, as peft targets it by name."""

    def __init__(self, out=OUT) -> None:
        super().__init__()
        self.proj = nn.Linear(IN, out, bias=True)

    def forward(self, x):
        return self.proj(x)


def peft_pair(dora: bool, dropout: float = 0.0, seed: int = 0):
    """peft's adapter layer with a non-zero B (so every gradient is exercised) and ours with the same tensors."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = Toy()
    ref = get_peft_model(copy.deepcopy(base), LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=dropout,
                                                         target_modules=["proj"], use_dora=dora))
    layer = ref.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.1)
    ours = adapters.AdaptedLinear(copy.deepcopy(base.proj), [(0, OUT)], R, ALPHA, dropout, dora)
    with torch.no_grad():
        ours.lora_A.copy_(layer.lora_A["default"].weight)
        ours.lora_B.copy_(layer.lora_B["default"].weight)
        if dora:
            ours.lora_magnitude.copy_(layer.lora_magnitude_vector["default"].weight)
    return ref, layer, ours


def grads_of(layer, dora: bool) -> dict:
    out = {"A": layer.lora_A["default"].weight.grad, "B": layer.lora_B["default"].weight.grad}
    if dora:
        out["m"] = layer.lora_magnitude_vector["default"].weight.grad
    return out


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_output_and_gradients_equal_peft_s(dora):
    ref, layer, ours = peft_pair(dora)
    x = torch.randn(3, 5, IN)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_ours = ref(x_ref), ours(x_ours)
    torch.testing.assert_close(y_ours, y_ref, **TOL)
    weights = torch.randn_like(y_ref)  # a loss whose gradient differs per output element
    (y_ref * weights).sum().backward()
    (y_ours * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOL)
    expected = grads_of(layer, dora)
    torch.testing.assert_close(ours.lora_A.grad, expected["A"], **TOL)
    torch.testing.assert_close(ours.lora_B.grad, expected["B"], **TOL)
    if dora:
        torch.testing.assert_close(ours.lora_magnitude.grad, expected["m"], **TOL)
    assert ours.weight.grad is None and ours.bias.grad is None  # the base is frozen


def test_dora_with_dropout_equals_peft_s():
    """In training with dropout, peft scales the dropped-out base output (its second branch); so do we."""
    ref, layer, ours = peft_pair(True, dropout=0.3)
    x = torch.randn(4, IN)
    torch.manual_seed(7)
    y_ref = ref(x)
    torch.manual_seed(7)
    y_ours = ours(x)
    torch.testing.assert_close(y_ours, y_ref, **TOL)


def test_dora_magnitude_after_one_adamw_step_equals_peft_s():
    ref, layer, ours = peft_pair(True)
    trainable = lambda m: [p for p in m.parameters() if p.requires_grad]  # noqa: E731
    opt_ref = torch.optim.AdamW(trainable(ref), lr=1e-2, weight_decay=0.01)
    opt_ours = torch.optim.AdamW(trainable(ours), lr=1e-2, weight_decay=0.01)
    x = torch.randn(6, IN)
    before = ours.lora_magnitude.detach().clone()
    for model, opt in ((ref, opt_ref), (ours, opt_ours)):
        model(x).pow(2).mean().backward()
        opt.step()
    magnitude = layer.lora_magnitude_vector["default"].weight
    assert (ours.lora_magnitude - before).abs().min() > 1e-3  # every entry moved (AdamW: by about lr)
    torch.testing.assert_close(ours.lora_magnitude, magnitude, **TOL)
    torch.testing.assert_close(ours.lora_B, layer.lora_B["default"].weight, **TOL)
    torch.testing.assert_close(ours(x), ref(x), **TOL)


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_merged_weight_gives_the_adapter_model_s_output(dora):
    _, layer, ours = peft_pair(dora)
    ours.eval()
    state = {"proj.weight": ours.weight.detach(), "proj.bias": ours.bias.detach(),
             "proj.lora_A": ours.lora_A.detach(), "proj.lora_B": ours.lora_B.detach()}
    if dora:
        state["proj.lora_magnitude"] = ours.lora_magnitude.detach()
    merged, saved = adapters.merge_state(state, {"proj": ours.slices}, LoraArgs(r=R, alpha=ALPHA), torch.device("cpu"))
    assert set(merged) == {"proj.weight", "proj.bias"} and set(saved) == set(state) - set(merged)
    x = torch.randn(5, IN)
    torch.testing.assert_close(nn.functional.linear(x, merged["proj.weight"], merged["proj.bias"]), ours(x), **TOL)
    layer.merge()  # peft's own merge agrees
    torch.testing.assert_close(merged["proj.weight"], layer.base_layer.weight, **TOL)


class QKV(nn.Module):
    def __init__(self, q, kv) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(IN, q), nn.Linear(IN, kv), nn.Linear(IN, kv)

    def forward(self, x):
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], dim=-1)


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_fused_qkv_with_key_off_equals_peft_on_separate_projections(dora):
    """LitGPT's qkv is one weight: query and value adapted, key not, as peft on q_proj and v_proj alone."""
    from peft import LoraConfig, get_peft_model

    q, kv = 32, 16
    torch.manual_seed(1)
    plain = QKV(q, kv)
    ref = get_peft_model(copy.deepcopy(plain), LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                                                          target_modules=["q_proj", "v_proj"], use_dora=dora))
    fused = nn.Linear(IN, q + 2 * kv)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([plain.q_proj.weight, plain.k_proj.weight, plain.v_proj.weight]))
        fused.bias.copy_(torch.cat([plain.q_proj.bias, plain.k_proj.bias, plain.v_proj.bias]))
    ours = adapters.AdaptedLinear(fused, [(0, q), (q + kv, kv)], R, ALPHA, 0.0, dora)
    layers = [ref.base_model.model.q_proj, ref.base_model.model.v_proj]
    with torch.no_grad():
        for layer in layers:
            layer.lora_B["default"].weight.normal_(0, 0.1)
        ours.lora_A.copy_(torch.cat([la.lora_A["default"].weight for la in layers]))
        ours.lora_B.copy_(torch.cat([la.lora_B["default"].weight for la in layers]))
        if dora:
            ours.lora_magnitude.copy_(torch.cat([la.lora_magnitude_vector["default"].weight for la in layers]))
    x = torch.randn(2, 3, IN)
    y_ref, y_ours = ref(x), ours(x)
    torch.testing.assert_close(y_ours, y_ref, **TOL)
    y_ref.square().sum().backward()
    y_ours.square().sum().backward()
    torch.testing.assert_close(ours.lora_B.grad, torch.cat([la.lora_B["default"].weight.grad for la in layers]), **TOL)
    torch.testing.assert_close(ours.lora_A.grad, torch.cat([la.lora_A["default"].weight.grad for la in layers]), **TOL)
    if dora:
        torch.testing.assert_close(ours.lora_magnitude.grad,
                                   torch.cat([la.lora_magnitude_vector["default"].weight.grad for la in layers]), **TOL)


def test_nf4_base_is_within_nf4_s_error_and_takes_no_gradient():
    from torchao.quantization import to_nf4

    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    weight = linear.weight.detach().clone()
    layer = adapters.AdaptedLinear(linear, [(0, 128)], R, ALPHA, 0.0, dora=False)
    with torch.no_grad():
        layer.lora_A.normal_(0, 0.1)
        layer.lora_B.normal_(0, 0.1)
    holder = nn.Module()
    holder.transformer = nn.Module()
    holder.transformer.h = nn.ModuleList([nn.ModuleDict({"layer": layer})])
    assert adapters.quantise_base(holder) == 1
    assert type(layer.weight).__name__ == "NF4Tensor"
    nf4 = layer.weight
    restored = adapters.dequantised(nf4).float()
    blocks, restored_blocks = weight.reshape(-1, 64), restored.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    # each block's absmax is itself stored in 8 bits (double quantisation): |w - c s'| <= half gap x s + |s - s'|
    stored = nf4.dequantize_scalers(nf4.quantized_scalers, nf4.quantization_factor, nf4.scaler_block_size)
    scale_error = (stored.float()[:, None] - absmax).abs()
    # rounding to the nearest of NF4's 16 code values moves a weight by at most half the widest gap between two
    # neighbouring codes (-1.0 to -0.6962) times its block's absmax
    half_gap = nf4.nf4.diff().max().item() / 2
    assert ((restored_blocks - blocks).abs() <= absmax * half_gap + scale_error + 1e-6).all()
    assert (restored - weight).abs().mean() < 0.1 * weight.abs().mean()
    assert torch.equal(restored, to_nf4(weight, 64, 256).get_original_weight().float())
    x = torch.randn(4, 256, requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None and not layer.weight.requires_grad
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None and x.grad is not None


def test_nf4_scaler_block_fits_small_layers():
    assert adapters.nf4_scaler_block(4096 * 4096) == 256
    assert adapters.nf4_scaler_block(64 * 32) == 32
    assert adapters.nf4_scaler_block(100) is None


def test_float8_is_refused_without_an_fp8_gpu():
    with pytest.raises(RuntimeError, match=r"engine\.float8: .*compute capability >= 8\.9.*runs on cpu"):
        converters.check_float8(torch.device("cpu"))


def test_float8_leaves_lm_head_and_odd_sized_layers():
    assert converters.float8_eligible(nn.Linear(64, 32), "transformer.h.0.attn.qkv")
    assert not converters.float8_eligible(nn.Linear(64, 32), "lm_head")
    assert not converters.float8_eligible(nn.Linear(64, 40 + 1), "transformer.h.0.mlp.fc")


def test_settings_refuse_what_cannot_run():
    assert EngineArgs().method == "full" and EngineArgs().float8 is False
    with pytest.raises(ValueError, match="engine.method"):
        EngineArgs(method="lokr")
    with pytest.raises(ValueError, match="engine.float8"):
        EngineArgs(method="qlora", float8=True)
    with pytest.raises(ValueError, match="lora_rank"):
        LoraArgs.from_yaml({"lora_rank": 8}, "lora")
    with pytest.raises(ValueError, match="no lora_query"):
        LoraArgs.from_yaml({"lora_query": False, "lora_value": False}, "dora")
    assert LoraArgs.from_yaml({"lora_r": 16, "lora_mlp": True}, "lora") == LoraArgs(r=16, mlp=True)


@pytest.mark.litgpt
def test_converters_put_adapters_and_float8_on_the_meta_model_keeping_litgpt_s_names():
    """The converters run on the meta model before sharding: adapters on the lora_* targets, float8 on the other
    block Linears (never lm_head); every checkpoint name stays where LitGPT has it."""
    from types import SimpleNamespace

    from litgpt import GPT, Config

    config = Config(name="t", block_size=64, vocab_size=128, padded_vocab_size=128, n_layer=2, n_head=4,
                    n_query_groups=2, n_embd=64, intermediate_size=128, bias=False, norm_class_name="RMSNorm",
                    mlp_class_name="LLaMAMLP")
    with torch.device("meta"):
        gpt = GPT(config)
    names = set(gpt.state_dict())
    run = SimpleNamespace(engine=EngineArgs(method="dora", float8=True), lora=LoraArgs(r=4, projection=True))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(converters, "check_float8", lambda device: None)  # the conversion itself needs no GPU
        done = converters.convert(gpt, run, torch.device("meta"))
    assert done[0].startswith("dora on 4 layers") and done[1] == "float8 on 6 Linear layers"
    kinds = {name: type(m).__name__ for name, m in gpt.named_modules()}
    assert kinds["transformer.h.0.attn.qkv"] == kinds["transformer.h.1.attn.proj"] == "AdaptedLinear"
    assert kinds["transformer.h.0.mlp.fc_1"] == "Float8Linear" and kinds["lm_head"] == "Linear"
    adapter_names = {k for k in gpt.state_dict() if "lora_" in k}
    assert set(gpt.state_dict()) - adapter_names == names
    assert {p.requires_grad for n, p in gpt.named_parameters() if "lora_" not in n} == {False}
