"""The training loop: micro batches, one optimizer step per global batch, stock's logging; and validation."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from llmhpc.process_group import all_sum
from llmhpc.train.fsdp2 import attention, converters, data
from llmhpc.train.fsdp2.model import AUTOCAST


def sync_gradients(model, enabled: bool):
    """Gradient reduction only on the last micro batch of a step (FSDP2 and DDP alike)."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if hasattr(model, "no_sync") and not enabled:
        return model.no_sync()
    return contextlib.nullcontext()


def forward_backward(state, micro: data.Micro, last: bool, backward: bool = True) -> torch.Tensor:
    """This rank's share of the step's loss for one micro batch, and its backward. FSDP2 and DDP average the
    gradients over the W processes, so the backward pass takes W x loss: the step's gradient is then that of the
    sum over all processes, which is the step's loss."""
    model, world, precision = state.model, state.world, state.precision
    mask = attention.make_mask(micro.documents, state.attention)
    autocast = (torch.autocast(world.device.type, dtype=AUTOCAST[precision]) if precision in AUTOCAST
                else contextlib.nullcontext())
    with sync_gradients(model, last or not backward), autocast:
        loss = model(micro.input_ids, micro.positions, mask, micro.targets, micro.weights)
        if backward:
            scaled = loss * world.size
            (state.scaler.scale(scaled) if state.scaler else scaled).backward()
    return loss.detach()


def optimizer_step(state) -> None:
    optimizer, scaler = state.optimizer, state.scaler
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if state.float8_all_gather:
        converters.precompute_float8_scales(state.model)
    optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()


def warm_up(state, steps: list[data.Step], build, shape, passes: int | None) -> float:
    """Compile (and let FSDP2 initialise) before the clock starts: one forward and backward pass on a micro
    batch of each distinct shape (`passes` None: every shape of the run, so no training step waits for a
    recompile: on 1 x H200, 7B, a step of a shape not warmed took 7 s instead of 1; packed runs have a few
    shapes, the same on every process), or of the first `passes` shapes (a second shape makes the compiled
    blocks shape-generic); gradients discarded. Every process makes the same number of passes. The time counts
    in the stage's wall, not in the training time."""
    t0 = time.perf_counter()
    rank, picked = state.world.rank, {}
    for step in steps:
        for rows in step.micros[rank]:
            if shape(rows) not in picked and (passes is None or len(picked) < passes):
                picked[shape(rows)] = (step, rows)
    runs = list(picked.values())
    while passes is not None and len(runs) < passes:
        runs.append(runs[0])
    for step, rows in runs:
        forward_backward(state, build(step, rows), last=True)
    warm_optimizer(state.optimizer)
    if state.world.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@torch.no_grad()
def warm_optimizer(optimizer) -> None:
    """Adam(W) only: one step on zero gradients at learning rate 0 allocates the states and warms the kernel,
    and changes nothing: the states stay zero, the parameters unchanged (update 0, decay factor 1), and the
    step counts are reset, so the first real step is a fresh one."""
    if type(optimizer).__name__ not in ("Adam", "AdamW"):
        optimizer.zero_grad(set_to_none=True)
        return
    optimizer.zero_grad(set_to_none=False)
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, rates):
        group["lr"] = lr
    for per_param in optimizer.state.values():
        if torch.is_tensor(per_param.get("step")):
            per_param["step"].zero_()
        elif "step" in per_param:
            per_param["step"] = 0
    optimizer.zero_grad(set_to_none=True)


def fit(state, steps: list[data.Step], stream, run, logger, per_epoch: int, checkpoints) -> None:
    """Train over the planned steps from the step after `checkpoints.resumed_at` (0, or a resumed run's), saving
    the step checkpoints `checkpoints` (step_checkpoint.StepCheckpoints) asks for. Each step's loss is logged one
    step late (no host sync in the step)."""
    start = checkpoints.resumed_at
    world, device = state.world, state.world.device
    per_step = data.micro_batches_per_step(run.train)
    accumulation = max(1, per_step // world.size)
    samples, pending = state.samples, None
    tokens = sum(len(samples[i].input_ids) for step in steps[:start] for i in step.samples)
    warned, t_step = None, time.perf_counter()
    for s, micros in enumerate(stream, start + 1):
        if s == start + 1:  # what the first step waited for its batch (the prefetch thread's start included)
            state.first_batch_wait_s = time.perf_counter() - t_step
        loss = torch.zeros((), device=device)
        with profiled(s == state.profile_step, world):
            for m, micro in enumerate(micros):
                loss += forward_backward(state, micro, last=m == len(micros) - 1)
            optimizer_step(state)
        all_sum(loss, world.size)
        warned, was_warned = checkpoints.stop_flag(), warned
        tokens += sum(len(samples[i].input_ids) for i in steps[s - 1].samples)
        if pending:
            log_step(*pending, run, world, logger)
        now = time.perf_counter()
        epoch = ((s * per_step) - 1) // per_epoch
        pending = (loss, {"iter": s * accumulation, "step": s, "epoch": epoch, "iter_time": now - t_step,
                          "tokens": tokens // world.size, "total_tokens": tokens,
                          "learning_rate": state.scheduler.get_last_lr()[0]})
        t_step = now
        if run.eval.interval and s % run.eval.interval == 0 and s < len(steps):
            log_step(*pending, run, world, logger)
            pending = None
            interval_validation(state, run, logger, s * accumulation)
        stop = was_warned is not None and was_warned.item() > 0  # the scheduler's warning: save now, then exit
        if checkpoints.due(s, stop, last_step=len(steps)):
            if pending:  # the step's loss is in the log before its checkpoint is
                log_step(*pending, run, world, logger)
                pending = None
            checkpoints.save(s, stop)
    if pending:
        log_step(*pending, run, world, logger)
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def profiled(enabled: bool, world):
    """Where one step's time goes (LLMHPC_FSDP2_PROFILE_STEP=N): the main process prints the top CUDA kernels."""
    if not enabled:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        yield
        if world.device.type == "cuda":
            torch.cuda.synchronize()
    if world.main:
        from llmhpc import profiling

        print(profiling.top_table(prof, rows=25, width=70), flush=True)
        if world.device.type == "cuda":  # what the kernel table cannot show: exposed communication and idle gaps
            timeline = profiling.device_timeline(profiling.kernel_intervals(prof.events()))
            print(f"Profiled step, rank 0: {profiling.describe(timeline)}", flush=True)


def log_step(loss: torch.Tensor, metrics: dict, run, world, logger) -> None:
    metrics = dict(metrics, loss=loss.item())
    if world.main:
        print(f"Epoch {metrics['epoch'] + 1} | iter {metrics['iter']} step {metrics['step']} |"
              f" loss train: {metrics['loss']:.3f}, val: n/a | iter time: {metrics['iter_time'] * 1000:.2f} ms (step)",
              flush=True)
        if logger is not None:
            ordered = {k: metrics[k] for k in ("loss", "iter", "step", "epoch", "iter_time", "tokens",
                                               "total_tokens", "learning_rate")}
            logger.log_metrics(ordered, step=metrics["iter"])


@torch.no_grad()
def validate(state, run) -> torch.Tensor:
    """Stock's validation loss: the mean over the validation micro batches (in order, padded to their longest)
    of each one's mean token loss; the batches are shared out over the processes. Runs without compilation."""
    world, samples = state.world, state.val_samples
    mbs = run.train.micro_batch_size
    batches = [list(range(i, min(i + mbs, len(samples)))) for i in range(0, len(samples), mbs)]
    batches = batches[: run.eval.max_iters] if state.limit_val else batches
    total = torch.zeros(2, device=world.device)
    model = state.model
    model.eval()
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else contextlib.nullcontext()
    with stance:
        for k, batch in enumerate(batches):
            if k % world.size != world.rank:
                continue
            weight = data.weights([batch], samples, state.ignore, "micro_batch")
            micro = data.to_device(data.collate([[i] for i in batch], samples, weight, False, 0, state.ignore),
                                   world.device)
            total[0] += forward_backward(state, micro, last=True, backward=False)
            total[1] += 1
        # processes without a batch of their own still take part in FSDP's gathers
        for _ in range(max(0, math.ceil(len(batches) / world.size) - int(total[1].item()))):
            micro = data.to_device(data.collate([[0]], samples, {0: 0.0}, False, 0, state.ignore), world.device)
            forward_backward(state, micro, last=True, backward=False)
    model.train()
    all_sum(total, world.size)
    return total[0] / total[1].clamp(min=1)


def interval_validation(state, run, logger, iter_num: int) -> None:
    t0 = time.perf_counter()
    val = validate(state, run).item()
    if state.world.main:
        print(f"iter {iter_num}: val loss {val:.4f}, val time: {(time.perf_counter() - t0) * 1000:.2f} ms", flush=True)
        if logger is not None:
            logger.log_metrics({"val_loss": val, "val_ppl": math.exp(val)}, step=iter_num)
