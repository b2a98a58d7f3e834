"""The fsdp2 fine-tune engine, one process per GPU (started by __main__.py, torchrun, srun or mpirun).

Same model (LitGPT's GPT from checkpoint_dir), same data, samples per step, optimizer, LR schedule and precision
as stock `litgpt finetune_full`; what differs is how the work is laid out (see the `engine:` switches in
args.py). Reads top to bottom: setup, main, fit (loop.py), finish (the final checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

from llmhpc import process_group
from llmhpc.compiling import compiled_graphs
from llmhpc.train import memory
from llmhpc.train.fsdp2 import (
    adapters,
    attention,
    checkpoint,
    compile_choice,
    converters,
    data,
    distributed,
    loop,
    model,
    parallel,
    run_files,
    step_checkpoint,
    stock,
)
from llmhpc.train.fsdp2 import args as args_mod
from llmhpc.train.fsdp2.layout import Layout
from llmhpc.train.fsdp2.state import PhaseClock, RunState


def setup(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmhpc.train.fsdp2", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="the YAML of `litgpt finetune_full --config`")
    opts = parser.parse_args(argv)
    launched = float(os.environ.get("LLMHPC_FSDP2_LAUNCH_TIME", time.time()))
    t_start = time.perf_counter() - (time.time() - launched)  # the clock of the stage: from the first launch
    run = args_mod.load(opts.config)  # the last import: LitGPT's config, model and tokenizer modules
    clock = PhaseClock(launch=t_start, imported=time.perf_counter(), imported_at=time.time())
    world = distributed.init(run.devices, run.num_nodes)
    print_main(world, f"Launch to engine start: {time.perf_counter() - t_start:.2f} s")
    main(run, world, clock)
    process_group.close(world.size)
    if world.size > 1:
        # everything is written and closed: skip the interpreter's and CUDA's teardown of this process
        sys.stdout.flush()
        sys.stderr.flush()
        if world.launcher == "mpirun":
            from mpi4py import MPI  # MPI counts a rank that exits without MPI_Finalize as a failure

            MPI.Finalize()
        os._exit(0)


def main(run, world, clock: PhaseClock) -> None:
    """`clock`: the launch and the last import; main marks the later phases in it."""
    t_start = clock.launch
    from litgpt import Config, Tokenizer  # LitGPT's own, without Lightning (args.load ran litgpt_core.load)

    stock.validate_args(run.train, run.eval)
    torch.manual_seed(run.seed)
    config = Config.from_file(run.checkpoint_dir / "model_config.yaml")
    tokenizer = Tokenizer(run.checkpoint_dir)
    samples, datamodule = data.load_samples(run.data, tokenizer, run.train)
    ignore = getattr(datamodule, "ignore_index", -100)
    state = RunState(world=world, precision=run.precision, samples=samples, ignore=ignore,
                     val_samples=val_samples(datamodule, ignore))
    longest = max(len(s.input_ids) for s in samples + state.val_samples)
    max_seq_length = min(longest, run.train.max_seq_length or longest)
    row_len = run.train.max_seq_length or longest
    layout = plan_layout(run, world, config, row_len)
    attention.check_supported(config, run.engine.packing)
    steps = data.plan(samples, run.train, world.size, run.engine.packing, row_len, layout.micro_rows,
                      datamodule.seed, ignore, run.engine.loss_weighting)
    _, lr_max_steps = data.steps_total(len(samples), run.train)
    layout = dataclasses.replace(layout, compile=choose_compile(run, world, config, layout, steps, samples))
    layout = dataclasses.replace(layout, attention=attention_backend(run, world, layout.compile))
    state.attention = layout.attention

    t_load = time.perf_counter()
    trainee, layout = build_model(run, world, config, layout, ignore, max_seq_length)
    print_main(world, f"Model built, sharded and loaded in {time.perf_counter() - t_load:.2f} s")
    state.model, state.float8_all_gather = trainee, layout.float8_all_gather
    state.scaler = parallel.grad_scaler(run.precision, layout.sharding, world)
    state.optimizer = make_optimizer(run, trainee, world)
    state.scheduler = stock.lr_scheduler(state.optimizer, warmup_steps=run.train.lr_warmup_steps,
                                         max_steps=lr_max_steps)
    report_settings(run, world, layout, state, steps, longest, max_seq_length, trainee)

    build = lambda step, rows: data.to_device(  # noqa: E731
        data.collate(rows, samples, step.weight, run.engine.packing, row_len, ignore), world.device)
    shape = lambda rows: data.shape(rows, samples, run.engine.packing, row_len)  # noqa: E731
    clock.warm_start = time.perf_counter()
    passes = warm_passes(run, layout, state.attention, world.device.type)
    warm = loop.warm_up(state, steps, build, shape, passes=passes)
    clock.warm_end = time.perf_counter()
    checkpoints = step_checkpoint.StepCheckpoints.open(state, run)  # after the warm-up: see restore
    done = checkpoints.resumed_at  # 0, or the steps a killed run had saved
    process_group.barrier(world.size)
    print_main(world, f"Start-up to training: {time.perf_counter() - t_start:.2f} s (compile and warm-up {warm:.2f} s)")

    logger = make_logger(run, world)
    stream = data.batches(steps[done:], world.rank, samples, run.engine.packing, row_len, ignore, world.device,
                          run.engine.prefetch)
    state.profile_step = int(os.environ.get("LLMHPC_FSDP2_PROFILE_STEP", "0"))
    gc.collect()
    gc.freeze()  # the set-up's objects leave the collector's view, and no collection pauses a step
    gc.disable()
    graphs = compiled_graphs()
    t0 = clock.train_start = time.perf_counter()
    loop.fit(state, steps, stream, run, logger, per_epoch=-(-len(samples) // run.train.micro_batch_size),
             checkpoints=checkpoints)
    clock.train_end = time.perf_counter()
    training_time = clock.train_end - t0
    # a slow first step: waiting for data, or a recompile the warm-up did not foresee
    print_main(world, f"First batch ready after {state.first_batch_wait_s * 1000:.1f} ms; "
                      f"{compiled_graphs() - graphs} graphs compiled during training")
    checkpoints.release()
    gc.enable()
    gc.unfreeze()
    report_training(world, steps[done:], samples, run, row_len, training_time)
    finish(state, run, world, logger, t_start)
    clock.saved = time.perf_counter()
    print_main(world, f"{PHASES_LINE}{json.dumps(clock.phase_times())}")


PHASES_LINE = "Engine phases (s): "  # the finetune stage reads the JSON after it (llmhpc.train.metrics)


def plan_layout(run, world, config, row_len: int) -> Layout:
    """Sharding, activation checkpointing and rows per micro batch, from the switches and a memory estimate."""
    engine = run.engine
    if engine.float8:
        converters.check_float8(world.device)  # refused before any loading
    with torch.device("meta"):
        from litgpt import GPT

        n_params = model.n_parameters(GPT(config))
    total = (torch.cuda.get_device_properties(world.device).total_memory if world.device.type == "cuda"
             else 64e9)
    sharding = memory.choose_sharding(config, n_params, run.precision, engine.method, engine.sharding, world.size,
                                      world.nodes, total, engine.memory_fraction, row_len)
    shards = memory.shards(sharding, world.size, world.nodes)
    checkpointing, rows = memory.plan_memory(config, n_params, run.precision, sharding, shards, row_len, total,
                                             engine.memory_fraction, engine.activation_checkpointing, engine.method,
                                             1 if engine.packing else run.train.micro_batch_size)
    micro_rows = rows if engine.micro_rows == "auto" else engine.micro_rows
    cross_entropy = engine.cross_entropy
    lora_head = engine.method != "full" and run.lora.head  # the fused loss reads lm_head.weight, not its adapter
    if cross_entropy == "fused" and (lora_head or not fused_ce_available(world.device)):
        cross_entropy = "chunked"
    return Layout(sharding=sharding, checkpointing=checkpointing, micro_rows=micro_rows, n_params=n_params,
                  cross_entropy=cross_entropy, row_len=row_len, shards=shards,
                  row_bytes=memory.row_bytes(config, run.precision, checkpointing, engine.method, row_len),
                  static_shapes=static_shapes(engine))  # compile, attention, float8_all_gather: decided later


def choose_compile(run, world, config, layout: Layout, steps, samples) -> bool:
    """engine.compile as given, or for auto whether the planned training pays the compile back; printed with
    its reason (the finetune stage's summary records the line)."""
    from llmhpc.train.metrics import flops_per_token

    tokens = data.token_counts(steps, samples, run.engine.packing, layout.row_len)
    per_token = flops_per_token(layout.n_params, config.n_layer, config.n_embd, layout.row_len,
                                frozen_base=run.engine.method != "full")
    planned = compile_choice.planned_seconds(tokens["raw_tokens_plus_prompt_template_and_padding"], per_token,
                                             world.size)
    warm = run.engine.compile == "auto" and compile_choice.warm_cache()
    chosen, reason = compile_choice.decide(run.engine.compile, world.device.type, planned, warm)
    print_main(world, f"{COMPILE_LINE}{reason}")
    return chosen


def attention_backend(run, world, compiling: bool) -> str:
    """engine.attention's backend; auto takes SDPA where compile auto chose eager: flex_attention compiles its own
    kernels (per row shape), a wait that a job too small to pay for compiling would not earn back."""
    chosen = attention.backend(run.engine.attention, world.device)
    if chosen == "flex" and run.engine.attention == "auto" and run.engine.compile == "auto" and not compiling:
        print_main(world, "Attention auto: sdpa, as this job runs eager (flex attention would compile its kernels)")
        return "sdpa"
    return chosen


COMPILE_LINE = "Compile decision: "  # the finetune stage's summary reads the reason after it (compile_decision)


def static_shapes(engine) -> bool:
    """A compiled graph per micro-batch shape where it pays: float8's whole-tensor amax reductions (shape-generic,
    one took 0.9 ms a layer, 8B on 4 x H200: float8 1.25x bf16 instead of 1.32x). bf16 steps ran as fast either
    way, and each extra shape costs a compile (LoRA, 8B, 3 shapes: 68 s), so other runs stay shape-generic.
    Packed runs have a few shapes, all compiled in the warm-up; unpacked ones a shape per longest sample."""
    if engine.compile_shapes == "auto":
        return engine.packing and engine.float8
    return engine.compile_shapes == "static"


def fused_ce_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import liger_kernel.transformers.fused_linear_cross_entropy  # noqa: F401
    except ImportError:
        return False
    return True


def build_model(run, world, config, layout: Layout, ignore: int, max_seq_length: int) -> tuple[torch.nn.Module, Layout]:
    """The trainee, and the layout with what building it decided: float8's all-gather and the converters applied."""
    gpt = model.build(config, run.precision, world.device)
    fsdp = parallel.fsdp(layout.sharding, world)
    layout = dataclasses.replace(layout, float8_all_gather=converters.gathers_float8(run.engine, fsdp, world.nodes))
    converted = converters.convert(gpt, run, world.device, layout.float8_all_gather)
    attention.install(gpt, layout.attention)
    trainee = model.Trainee(gpt, layout.checkpointing, layout.cross_entropy, ignore)
    trainee = parallel.wrap(trainee, layout.sharding, world, layout.compile, static_shapes=layout.static_shapes)
    state = adapters.initial_state(gpt, checkpoint.read_state(run.checkpoint_dir), run.seed, world.device)
    trainee = parallel.materialise(trainee, state, run, world, layout.sharding, max_seq_length,
                                   prepare=lambda t: prepare_frozen(t, run, world, layout, converted))
    trainee.train()
    return trainee, dataclasses.replace(layout, converted=tuple(converted))


def prepare_frozen(trainee, run, world, layout: Layout, converted: list[str]) -> None:
    """Adapter methods: the frozen base out of DDP's start-up broadcast; for qlora, in NF4 (noted in `converted`)."""
    if run.engine.method == "qlora":
        converted.append(f"NF4 base ({adapters.quantise_base(trainee.gpt)} weights)")
    if run.engine.method != "full" and world.size > 1 and layout.sharding == "none":
        adapters.ignore_frozen_in_ddp(trainee)


def make_optimizer(run, trainee, world):
    extra = {"fused": True} if run.engine.fused_adamw and world.device.type == "cuda" else {}
    trainable = [p for p in trainee.parameters() if p.requires_grad]  # all of them but for adapter methods
    return stock.optimizer(copy.deepcopy(run.optimizer), trainable, **extra)


def val_samples(datamodule, ignore: int) -> list:
    out = []
    for i in range(len(datamodule.test_dataset)):
        item = datamodule.test_dataset[i]
        targets = torch.cat([item["labels"][1:], torch.tensor([ignore], dtype=item["labels"].dtype)])
        out.append(data.Sample(item["input_ids"], targets, int(item["token_counts"]["raw"])))
    return out


def make_logger(run, world):
    if not world.main or run.logger_name != "csv":
        return None
    return run_files.MetricsCSV(run.out_dir / "logs", name="csv", flush_every=run.train.log_interval)


def warm_passes(run, layout: Layout, attention_backend: str, device_type: str = "cuda") -> int | None:
    """Every shape when packed (rows of max_seq_length: a few shapes, alike on all processes); two otherwise
    (unpacked micro batches have a shape per longest sample, different on each process). Uncompiled blocks need
    one pass on a GPU (its allocator and kernels), none on a CPU, where nothing is compiled or cached (a pass of
    6 rows of 256 tokens through pythia-14m's shape was 5.6 s of a CPU job), unless flex attention (compiled on
    its own) is packed: its kernels compile per shape (7B on 2 x H200, compile off: a step of a shape not warmed
    took 2.5 s, 13.4 s under mpirun, instead of 0.7)."""
    if not layout.compile and not (attention_backend == "flex" and run.engine.packing):
        return 0 if device_type == "cpu" else 1
    return None if run.engine.packing else 2


def print_main(world, text: str) -> None:
    if world.main:
        print(text, flush=True)


def report_settings(run, world, layout: Layout, state, steps, longest, max_seq_length, trainee) -> None:
    engine = run.engine
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    rows = sorted({len(r) for s in steps for r in s.micros[0]})
    if run.engine.method == "full":
        print_main(world, f"Number of trainable parameters: {layout.n_params:,}")
    else:  # as `litgpt finetune_lora` prints them
        trainable, frozen = adapters.parameter_counts(trainee)
        print_main(world, f"Number of trainable parameters: {trainable:,}")
        print_main(world, f"Number of non-trainable parameters: {frozen:,}")
    print_main(world, f"The longest sequence length in the train data is {longest}, the model's maximum sequence "
                      f"length is {max_seq_length} and context length is {unwrap(trainee).config.block_size}")
    print_main(world, (
        f"Engine fsdp2 | packing={on(engine.packing)} micro_rows={layout.micro_rows} (rows per micro batch: "
        f"{rows}) activation_checkpointing={on(layout.checkpointing)} ({engine.activation_checkpointing}) "
        f"sharding={layout.sharding} compile={on(layout.compile)}"
        f"{' (static shapes)' if layout.compile and layout.static_shapes else ''} "
        f"fused_adamw={on(engine.fused_adamw and world.device.type == 'cuda')} "
        f"cross_entropy={layout.cross_entropy} loss_weighting={engine.loss_weighting} "
        f"prefetch={on(engine.prefetch)} fast_save={on(engine.fast_save)} attention={state.attention} "
        f"method={engine.method} float8={on(engine.float8)} | "
        f"precision {run.precision} | {world.size} process(es) via {world.launcher} on {world.device.type} | "
        f"{len(steps)} optimizer steps of {run.train.global_batch_size} samples"))
    if layout.converted:
        print_main(world, f"Model converters: {'; '.join(layout.converted)}")
    # the preflight's estimate, for the rows this run packs: the summary sets it beside the measured peak
    accumulating = max(len(s.micros[0]) for s in steps) > 1
    static = memory.static_bytes(layout.n_params, run.precision, layout.sharding, layout.shards,
                                 engine.method, accumulating)
    predicted = (static + max(rows) * layout.row_bytes) / memory.GB
    print_main(world, f"Predicted peak memory per GPU: {predicted:.2f} GB (weights, gradients and optimizer "
                      f"{static / memory.GB:.2f} GB; activations for {max(rows)} row(s) of {layout.row_len} "
                      f"tokens)")


def report_training(world, steps, samples, run, row_len: int, training_time: float) -> None:
    counts = data.token_counts(steps, samples, run.engine.packing, row_len)
    print_main(world, stock.performance_report(training_time, counts, world.device.type))
    useful = counts["raw_tokens_plus_prompt_template"] / training_time
    print_main(world, f"Useful tokens (w/ prompt, no padding) per second: {useful:.2f} tok/s, "
                      f"per device {useful / world.size:.2f} tok/s")
    trained = sum(len(step.samples) for step in steps)  # ISC25's score: training samples per second
    print_main(world, f"Samples per second: {trained / training_time:.3f} samples/s, "
                      f"per device {trained / training_time / world.size:.3f} samples/s ({trained} samples)")


def finish(state, run, world, logger, t_start: float) -> None:
    """Final checkpoint (written in the background with fast_save, while the final validation runs), then the
    files stock writes beside it."""
    final = run.out_dir / "final"
    t0 = time.perf_counter()
    writer = None
    if run.engine.fast_save:
        full = gather_final(state, run, world, final)
        print_main(world, f"Gathered the full state dict in {time.perf_counter() - t0:.2f} s")
        if world.main:
            writer = checkpoint.write_in_background(full, final / "lit_model.pth", fast=True)
        del full
    if run.eval.final_validation:
        val = loop.validate(state, run).item()
        print_main(world, f"Final evaluation | val loss: {val:.3f} | val ppl: {torch.exp(torch.tensor(val)):.3f}")
        if logger is not None:
            logger.log_metrics({"val_loss": val, "val_ppl": float(torch.exp(torch.tensor(val)))},
                               step=len(state.samples))
    if not run.engine.fast_save:
        full = gather_final(state, run, world, final)
        if world.main:
            checkpoint.write(full, final / "lit_model.pth", fast=False)
    if world.main:
        run_files.side_files(run, final)
        if writer is not None:
            print(f"Wrote lit_model.pth in {checkpoint.joined(writer):.2f} s", flush=True)
        if logger is not None:
            logger.finalize("success")
        print(f"Saved the final checkpoint to {final} in {time.perf_counter() - t0:.2f} s; "
              f"{time.perf_counter() - t_start:.2f} s since launch", flush=True)
    process_group.barrier(world.size)


def gather_final(state, run, world, final: Path) -> dict:
    """The full state dict on the main process. Adapter methods: the adapters merged into the base weights (so
    lit_model.pth is a plain checkpoint of the original model), and written beside it as lit_model.pth.lora
    (stock `litgpt finetune_lora`'s file and tensor names)."""
    gpt = unwrap(state.model)
    if run.engine.method == "qlora":
        adapters.dequantise_base(gpt)
    full = checkpoint.gather(gpt, world.main)
    if run.engine.method == "full" or not world.main:
        return full
    if run.engine.method == "qlora":  # as `litgpt merge_lora`: into the checkpoint's own weights, not their NF4 rounding
        original = checkpoint.read_state(run.checkpoint_dir)
        full.update({k: original[k].to(t.device, t.dtype) for k, t in full.items() if k in original})
    slices = {name: layer.slices for name, layer in adapters.adapted_layers(gpt).items()}
    full, lora_state = adapters.merge_state(full, slices, run.lora, world.device)
    checkpoint.write(lora_state, final / "lit_model.pth.lora", fast=True)
    return full


def unwrap(module):
    return module.module.gpt if hasattr(module, "module") else module.gpt


