"""The key tables that check `finetune.extra` at parse time match the installed LitGPT's own arguments and the fsdp2
engine's switches (the tables exist so that the parse needs no torch)."""

from __future__ import annotations

import pytest

from llmhpc import litgpt_args
from llmhpc.train.registry import FSDP2, STOCK

pytestmark = pytest.mark.litgpt


def test_the_tables_are_litgpt_s_own_signatures_and_the_engine_s_fields():
    real = litgpt_args.generate()
    assert real["SETUP"] == litgpt_args.SETUP, "run `python -m llmhpc.litgpt_args` and paste SETUP"
    assert real["SECTIONS"] == litgpt_args.SECTIONS, "run `python -m llmhpc.litgpt_args` and paste SECTIONS"
    assert real["ENGINE"] == litgpt_args.ENGINE, "run `python -m llmhpc.litgpt_args` and paste ENGINE"
    assert real["OPTIMIZERS"] == litgpt_args.OPTIMIZERS, "run `python -m llmhpc.litgpt_args` and paste OPTIMIZERS"
    assert real["LITGPT_VERSION"] in (None, litgpt_args.LITGPT_VERSION)


def test_what_the_table_refuses_stock_litgpt_refuses_too():
    """jsonargparse, as `litgpt finetune_full --config` runs it, refuses the key the check refuses."""
    from jsonargparse import ArgumentParser
    from litgpt.finetune.full import setup

    parser = ArgumentParser(exit_on_error=False)
    parser.add_function_arguments(setup)
    with pytest.raises(Exception, match="max_step"):
        parser.parse_object({"checkpoint_dir": "x", "train": {"max_step": 5}})
    assert litgpt_args.problems({"train": {"max_step": 5}}, "full", STOCK)


def test_a_typo_in_the_optimizer_s_arguments_is_refused_as_torch_refuses_it():
    """LitGPT hands optimizer.init_args to the class: torch raises on the typo only inside the job."""
    import torch

    with pytest.raises(TypeError, match="weight_decai"):
        torch.optim.AdamW([torch.zeros(1, requires_grad=True)], weight_decai=0.1)
    extra = {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-4, "weight_decai": 0.1}}}
    (refusal,) = litgpt_args.problems(extra, "full", STOCK)
    assert "finetune.extra.optimizer.init_args.weight_decai" in refusal and "did you mean 'weight_decay'" in refusal
    assert litgpt_args.problems({"optimizer": {"class_path": "SGD", "init_args": {"momentum": 0.9}}}, "lora", FSDP2) == []
    assert litgpt_args.problems({"optimizer": {"class_path": "my.Optim", "init_args": {"anything": 1}}}, "full",
                                STOCK) == []  # not a class the table knows: its own arguments
