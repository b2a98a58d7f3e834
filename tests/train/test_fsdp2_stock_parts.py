"""The fsdp2 engine's own versions of what it took from LitGPT and Lightning (so that its process imports neither
Lightning, torchmetrics nor transformers) against LitGPT's and Lightning's own on the same input: the tokenized
samples of the data the workflow writes, the argument check, the LR schedule, the optimizer, the performance
report, the CSV log, hyperparameters.yaml and the launcher's ranks."""

from __future__ import annotations

import json
import shutil
import sys

import fsdp2_tiny
import pytest
import torch
import yaml

from llmhpc.sources.embedded import shipped_dir
from llmhpc.train.fsdp2 import json_data, run_files, stock

pytestmark = pytest.mark.litgpt


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from litgpt import Tokenizer

    folder = tmp_path_factory.mktemp("tok")
    fsdp2_tiny.write_tokenizer(folder)
    return Tokenizer(folder)


def items(dataset) -> list:
    return [(d["input_ids"].tolist(), d["labels"].tolist(), d["token_counts"]) for d in
            (dataset[i] for i in range(len(dataset)))]


@pytest.mark.parametrize("mask_prompt,max_seq_length", [(False, None), (True, 48)])
def test_tokenized_samples_are_litgpt_json_s(tokenizer, tmp_path, mask_prompt, max_seq_length):
    """The embedded default's Alpaca data (the folder the finetune stage points json_path at), and one file
    split by val_split_fraction: the same samples in the same order, ids, labels and token counts alike."""
    from litgpt.data import JSON

    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.json", "val.json"):
        shutil.copyfile(shipped_dir() / name, folder / name)
    records = json.loads((folder / "train.json").read_text())[:40]
    (tmp_path / "one.json").write_text(json.dumps(records))
    for path, split in ((folder, None), (tmp_path / "one.json", 0.25)):
        kwargs = dict(json_path=path, mask_prompt=mask_prompt, val_split_fraction=split, prompt_style="alpaca",
                      ignore_index=-7, seed=3, num_workers=0)
        ours, theirs = json_data.JSON(**kwargs), JSON(**kwargs)
        for module in (ours, theirs):
            module.connect(tokenizer=tokenizer, batch_size=2, max_seq_length=max_seq_length)
            module.prepare_data()
            module.setup()
        assert len(ours.train_dataset) > 0 and len(ours.test_dataset) > 0
        assert items(ours.train_dataset) == items(theirs.train_dataset)
        assert items(ours.test_dataset) == items(theirs.test_dataset)
        assert type(ours.prompt_style) is type(theirs.prompt_style)


def test_a_missing_data_path_is_refused_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.init_args.json_path"):
        json_data.JSON(json_path=tmp_path / "nothing")


def test_lr_schedule_is_finetune_full_s():
    from litgpt.finetune.full import get_lr_scheduler

    def rates(make):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.02)
        sched = make(opt, warmup_steps=3, max_steps=11)
        out = []
        for _ in range(14):
            opt.step()
            sched.step()
            out.append(sched.get_last_lr()[0])
        return out

    ours = rates(stock.lr_scheduler)
    assert ours == rates(get_lr_scheduler)
    assert max(ours) == pytest.approx(0.02) and ours[0] < ours[2]  # warm-up, then the cosine


@pytest.mark.parametrize("spec,extra", [
    ({"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "weight_decay": 0.1, "betas": [0.9, 0.95]}},
     {"foreach": False}),
    ("RMSprop", {"fused": True}),  # RMSprop takes no `fused`: left out, as litgpt does
    ("torch.optim.SGD", {"foreach": True}),
])
def test_optimizer_is_litgpt_s(spec, extra):
    from litgpt.utils import instantiate_torch_optimizer

    def made(make):
        params = [torch.nn.Parameter(torch.ones(3))]
        opt = make(json.loads(json.dumps(spec)), params, **extra) if isinstance(spec, dict) else make(spec, params, **extra)
        return type(opt), {k: v for k, v in opt.param_groups[0].items() if k != "params"}

    assert made(stock.optimizer) == made(instantiate_torch_optimizer)


def test_performance_report_is_litgpt_s():
    from litgpt.utils import create_finetuning_performance_report

    counts = {"raw_tokens": 384, "raw_tokens_plus_prompt_template": 945,
              "raw_tokens_plus_prompt_template_and_padding": 1440}
    assert stock.performance_report(5.52, counts, "cpu") == create_finetuning_performance_report(5.52, counts, "cpu")


@pytest.mark.parametrize("train,eval_,refused", [
    ({"epochs": 1}, {"max_new_tokens": 5}, False),
    ({"epochs": None, "max_steps": 4}, {"max_new_tokens": 5}, True),
    ({"epochs": 1, "max_norm": 1.0}, {"max_new_tokens": 5}, True),
    ({"epochs": 0, "max_steps": None}, {"max_new_tokens": 5}, True),
    ({"epochs": 1}, {"max_new_tokens": None}, True),
])
def test_argument_check_refuses_what_finetune_full_refuses(train, eval_, refused):
    from litgpt.args import EvalArgs, TrainArgs
    from litgpt.finetune.full import validate_args

    def outcome(check):
        try:
            check(TrainArgs(**train), EvalArgs(**eval_))
        except ValueError:
            return True
        return False

    assert outcome(stock.validate_args) == outcome(validate_args) == refused


def test_metrics_csv_is_lightning_s(tmp_path):
    """Steps logged with flushes between them and validation columns that appear late (the file is rewritten
    under the wider header); a second logger in the same folder takes the next version, as a resumed run's."""
    from lightning.fabric.loggers import CSVLogger

    def log(logger):
        for i in range(1, 6):
            logger.log_metrics({"loss": 1.0 / i, "iter": i, "step": i, "learning_rate": torch.tensor(0.5 * i)}, step=i)
            if i == 3:
                logger.log_metrics({"val_loss": 0.25, "val_ppl": 1.5}, step=i)
        logger.finalize("success")

    for name, make in (("ours", lambda root: run_files.MetricsCSV(root, "csv", flush_every=2)),
                       ("lightning", lambda root: CSVLogger(root_dir=root, name="csv", flush_logs_every_n_steps=2))):
        log(make(tmp_path / name))
        log(make(tmp_path / name))
    for version in ("version_0", "version_1"):
        ours = (tmp_path / "ours/csv" / version / "metrics.csv").read_text()
        assert ours == (tmp_path / "lightning/csv" / version / "metrics.csv").read_text()
    assert ours.splitlines()[0] == "iter,learning_rate,loss,step,val_loss,val_ppl"


def litgpt_hyperparameters(cfg: dict, folder, monkeypatch) -> dict:
    """What stock writes: litgpt's save_hyperparameters over its setup, reading the YAML from sys.argv."""
    from litgpt.parser_config import save_hyperparameters

    if any(k.startswith("lora_") for k in cfg):
        from litgpt.finetune.lora import setup
    else:
        from litgpt.finetune.full import setup
    folder.mkdir()
    (folder / "given.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.setattr(sys, "argv", ["litgpt", "--config", str(folder / "given.yaml")])
    monkeypatch.setenv("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    save_hyperparameters(setup, folder)
    return yaml.safe_load((folder / "hyperparameters.yaml").read_text())


@pytest.mark.parametrize("variant", ["full", "lora", "partial"])
def test_hyperparameters_are_stock_s(tmp_path, monkeypatch, variant):
    """The workflow's YAML for finetune_full and finetune_lora, and one that leaves keys to setup's defaults
    (train keys, eval, the data module's arguments, the optimizer as a name)."""
    root = fsdp2_tiny.make(tmp_path / "kit", n=8)
    cfg = yaml.safe_load(fsdp2_tiny.config(root, "out").read_text())
    if variant == "lora":
        del cfg["resume"]
        cfg.update(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_query=True, lora_key=False, lora_value=True,
                   lora_projection=False, lora_mlp=True, lora_head=False)
    if variant == "partial":
        cfg["train"] = {"global_batch_size": 4, "micro_batch_size": 2, "max_steps": 3}
        del cfg["eval"]
        cfg["data"]["init_args"] = {"json_path": cfg["data"]["init_args"]["json_path"]}
        cfg["optimizer"] = "AdamW"
    stock_h = litgpt_hyperparameters(cfg, tmp_path / "stock", monkeypatch)
    ours = yaml.safe_load(yaml.safe_dump(run_files.hyperparameters(cfg), sort_keys=False))
    assert ours == stock_h
    assert list(ours) == list(stock_h)


TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "GROUP_RANK": "2", "LOCAL_WORLD_SIZE": "4",
            "TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "node7", "MASTER_PORT": "29511"}
SRUN = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_PROCID": "6", "SLURM_LOCALID": "2",
        "SLURM_NODEID": "1", "SLURM_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "4471234", "SLURM_JOB_NAME": "ft"}


@pytest.mark.parametrize("env,launcher", [
    (TORCHRUN, "torchrun"),
    ({k: v for k, v in TORCHRUN.items() if not k.startswith("MASTER")}, "torchrun"),
    (SRUN, "srun"),
    ({**SRUN, "SLURM_NODELIST": "a01,a02", "MASTER_PORT": "23456"}, "srun"),
    ({**SRUN, "SLURM_JOB_NAME": "interactive"}, None),  # Lightning's way out of SLURM detection
    ({**SRUN, "SLURM_NTASKS": "1"}, None),
])
def test_launcher_ranks_are_lightning_s(monkeypatch, env, launcher):
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    from llmhpc import launchers

    for key in [k for k in list(__import__("os").environ) if k.startswith(("SLURM_", "MASTER_", "OMPI_", "PMI_"))
                or k in TORCHRUN]:
        monkeypatch.delenv(key)
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning sets these where missing: put back after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # MPI's initialisation under Slurm's variables without srun aborts the process; mpirun is not under test here
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    found = launchers.cluster_environment()
    assert (found[0] if found else None) == launcher
    if launcher is None:
        assert not (SLURMEnvironment.detect() and int(env["SLURM_NTASKS"]) > 1)
        return
    theirs = TorchElasticEnvironment() if launcher == "torchrun" else SLURMEnvironment()
    ours = found[1]
    assert (ours.global_rank(), ours.world_size(), ours.local_rank(), ours.main_address, ours.main_port) == \
        (theirs.global_rank(), theirs.world_size(), theirs.local_rank(), theirs.main_address, theirs.main_port)


def test_a_data_module_the_engine_does_not_know_is_litgpt_s_own(tmp_path, monkeypatch):
    """Only litgpt.data.JSON has an equivalent here; another data module is LitGPT's class (which imports
    Lightning: that run needs it), and hyperparameters.yaml lists its arguments as stock's does."""
    from litgpt.data import Alpaca

    from llmhpc.train.fsdp2.args import instantiate

    spec = {"class_path": "litgpt.data.Alpaca", "init_args": {"download_dir": str(tmp_path / "alpaca"), "seed": 7}}
    module = instantiate(spec)
    assert type(module) is Alpaca and module.download_dir == tmp_path / "alpaca" and module.seed == 7
    assert type(instantiate({"class_path": "litgpt.data.JSON", "init_args": {"json_path": str(tmp_path)}})) \
        is json_data.JSON
    root = fsdp2_tiny.make(tmp_path / "kit", n=8)
    cfg = {**yaml.safe_load(fsdp2_tiny.config(root, "out").read_text()), "data": spec}
    assert run_files.hyperparameters(cfg) == litgpt_hyperparameters(cfg, tmp_path / "stock", monkeypatch)
