"""The finetune stage's own checks, without a fine-tune (the real runs are in tests/train/test_litgpt_run.py)."""

from __future__ import annotations

import pytest

from llmhpc.stages import finetune


@pytest.mark.unit
def test_a_fine_tune_that_exited_0_without_weights_fails_the_stage_naming_the_file(tmp_path):
    (tmp_path / "out/final").mkdir(parents=True)
    (tmp_path / "out/final/model_config.yaml").write_text("name: tiny\n")  # the side files, not the weights
    with pytest.raises(RuntimeError, match=r"exited with 0 but wrote no .*out/final/lit_model\.pth; see ft\.stdout"):
        finetune.check_final_weights(tmp_path / "out", "ft.stdout")
    (tmp_path / "out/final/lit_model.pth").write_bytes(b"weights")
    finetune.check_final_weights(tmp_path / "out", "ft.stdout")
