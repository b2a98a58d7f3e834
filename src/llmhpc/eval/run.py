"""The fast HellaSwag scorer as a program, one process or many (torchrun):

    python -m llmhpc.eval.run --checkpoint DIR --eval-file F --predictions P --metrics M \
        [--precision auto|bf16-true|16-true|32-true] [--bos auto|true|false] [--token-budget N] \
        [--pipeline-stages S] [--max-memory-gib G] [--limit N] [--reference-metrics R --tolerance-pt 0.5]
    torchrun --nproc_per_node 4 -m llmhpc.eval.run ...                        # 4 data-parallel ranks
    torchrun --nproc_per_node 4 -m llmhpc.eval.run --pipeline-stages 4 ...    # one model over 4 GPUs
    python -m llmhpc.eval.run --options JSON          # registry.FastOptions, as the evaluate stage starts it

The weights load while a thread reads, tokenises and schedules the items; each rank scores its share and
appends finished items to its part file (store.py: a killed run resumes); rank 0 writes predictions.jsonl and
metrics.json (evaluate()'s keys plus the scorer, the BOS decision, the timing phases and the throughput)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

T0 = time.perf_counter()

import torch  # noqa: E402
import yaml  # noqa: E402

from llmhpc import atomic, clock, cuda_start, litgpt_core, process_group  # noqa: E402
from llmhpc.eval import float8 as float8_scoring  # noqa: E402
from llmhpc.eval import parallel, store  # noqa: E402
from llmhpc.eval.fast import DEFAULT_TOKEN_BUDGET, Collector, Stage, compile_pays, plan, run_stage  # noqa: E402
from llmhpc.eval.hellaswag import read_hellaswag  # noqa: E402
from llmhpc.eval.loading import batch_encoder, load_model_part, load_tokenizer, resolve_bos  # noqa: E402
from llmhpc.eval.registry import FAST, FastOptions, ScoringJob  # noqa: E402
from llmhpc.eval.schedule import chunk_bounds, doc_size, schedule_stats, shard_positions, tokenize_items  # noqa: E402
from llmhpc.eval.warm import compile_record, finish_warm_up, start_warm_up  # noqa: E402
from llmhpc.litgpt_checkpoint import default_precision  # noqa: E402
from llmhpc.readahead import prefetch  # noqa: E402
from llmhpc.settings import EvaluateSettings  # noqa: E402
from llmhpc.train.stock_save_interval import parameters  # noqa: E402


def process_age() -> float:
    """Seconds since this process started (llmhpc.clock), so metrics can time the whole run, imports included; from
    this module's import where /proc cannot tell."""
    age = clock.process_age()
    return age if age is not None else time.perf_counter() - T0


def parser() -> argparse.ArgumentParser:
    """The flags; one left out is absent (its default is the schema's for an evaluate key, FastOptions' else)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", required=True, help="LitGPT checkpoint directory")
    ap.add_argument("--eval-file", required=True, help="HellaSwag items (.jsonl or .json)")
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--precision", help="auto (bf16-true on GPU, 16-true without bf16, 32-true on CPU), bf16-true, "
                    "16-true, 32-true")
    ap.add_argument("--bos", choices=["auto", "true", "false"],
                    help="prepend BOS: auto follows the tokenizer as lm-eval 0.4.13 does")
    ap.add_argument("--device", help="auto, cuda or cpu")
    ap.add_argument("--token-budget", type=int, help="tokens per batch, rows x longest row "
                    f"(0: {DEFAULT_TOKEN_BUDGET['cuda']} on GPU, {DEFAULT_TOKEN_BUDGET['cpu']} on CPU)")
    ap.add_argument("--pipeline-stages", type=int, help="GPUs one model is split over")
    ap.add_argument("--max-memory-gib", type=float, help="cap each process's GPU memory")
    ap.add_argument("--limit", type=int, help="score only the first N items")
    ap.add_argument("--no-resume", action="store_true", help="ignore part files of an earlier run")
    ap.add_argument("--reference-metrics", help="fail when acc/acc_norm differ from these")
    ap.add_argument("--tolerance-pt", type=float)
    ap.add_argument("--peak-tflops", type=float, help="per device, for MFU in the metrics")
    ap.add_argument("--compile", help="the blocks under torch.compile: auto (on GPU), true, "
                    "false (eager), or a torch.compile backend's name")
    ap.add_argument("--wait-for-compile", action="store_true", help="score no batch before the blocks are "
                    "compiled (every batch the same code; default: the first batches run eager meanwhile)")
    ap.add_argument("--first-chunk", type=int, help="items tokenised before the first batches are "
                    "scored; later chunks double")
    ap.add_argument("--load-threads", type=int)
    ap.add_argument("--float8", action="store_true", help="the blocks' linear layers in float8 (torchao, rowwise)")
    ap.add_argument("--quiet", action="store_true")
    return ap


def parse_args(argv=None) -> FastOptions:
    """The program's options: from `--options JSON` (how the evaluate stage starts each process), or from the
    flags, built as the stage builds them (the evaluate keys given here over the schema's defaults)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 2 and argv[0] == "--options":
        return FastOptions.from_json(argv[1])
    given = vars(parser().parse_args(argv))
    job = ScoringJob(*(given.pop(name) for name in ("checkpoint", "eval_file", "predictions", "metrics")))
    keys = {f.name for f in dataclasses.fields(EvaluateSettings)}
    settings = EvaluateSettings.from_dict({k: given.pop(k) for k in list(given) if k in keys})
    return FastOptions.from_settings(settings, job, **given)


def read_docs(path: Path, limit: int) -> list[dict]:
    """The items, checked record by record (hellaswag.read_hellaswag); the first `limit` where it is set."""
    docs = read_hellaswag(path)
    return docs[:limit] if limit else docs


def prepare(options: FastOptions, topo, docs, done: set, max_len: int, budget: int, pin: bool, out: dict,
            feed: queue.Queue) -> None:
    """Tokenizer, BOS decision, this rank's items, and its batches, put on `feed` chunk by chunk (then None),
    in a thread while the weights load: scoring starts once the first chunk is tokenised instead of all of
    them (on 1 x H200 tokenising 10,042 items with a Llama-2-style tokenizer took 10-15 s). out["items"] grows
    before each chunk's batches are put, so a batch's item positions are always there for the Collector."""
    try:
        t = time.perf_counter()
        tokenizer = load_tokenizer(options.checkpoint)
        bos_id, why = resolve_bos(tokenizer, options.checkpoint, options.bos)
        out.update(bos_id=bos_id, bos_why=why, tokenize_s=time.perf_counter() - t, schedule_s=0.0)
        todo = [i for i in range(len(docs)) if i not in done]
        mine = [todo[k] for k in shard_positions([doc_size(docs[i]) for i in todo], topo.data_parallel,
                                                 topo.pipeline)]
        encode = batch_encoder(tokenizer)
        for lo, hi in chunk_bounds(len(mine), options.first_chunk):
            t0 = time.perf_counter()
            items = tokenize_items([docs[i] for i in mine[lo:hi]], encode, bos_id, indices=mine[lo:hi])
            t1 = time.perf_counter()
            row_batches, tensors = plan(items, max_len, budget, pin=pin, first=len(out["items"]))
            out["items"].extend(items)
            out["row_batches"].extend(row_batches)
            out["tokenize_s"] += t1 - t0
            out["schedule_s"] += time.perf_counter() - t1
            for batch in tensors:
                feed.put(batch)
                out.setdefault("first_batch_at", time.perf_counter())
    except BaseException as err:  # re-raised in the main thread
        out["error"] = err
    finally:
        feed.put(None)


def batches_from(feed: queue.Queue):
    while (batch := feed.get()) is not None:
        yield batch


def score_rank(options: FastOptions, topo, stage, prep: dict, batches) -> tuple[list[dict], float]:
    writer = store.PartWriter(options.predictions, topo.rank) if stage.is_last else None
    collect = Collector(prep["items"], on_item=writer)

    def on_result(t, ll):
        collect(t, ll)
        writer.flush()

    transport = parallel.Transport(topo) if topo.stages > 1 else None
    process_group.barrier(topo.world)
    t = time.perf_counter()
    run_stage(stage, batches, on_result, transport)
    if stage.device.type == "cuda":
        torch.cuda.synchronize(stage.device)
    elapsed = time.perf_counter() - t
    if writer is not None:
        writer.close()
    return collect.rows, elapsed


def setup_device(options: FastOptions, topo) -> tuple[str, str]:
    kind = "cuda" if options.device == "auto" and torch.cuda.is_available() else options.device.split(":")[0]
    device = f"cuda:{topo.local_rank}" if kind == "cuda" else "cpu"
    if kind == "cuda":
        cuda_start.finish()
        torch.cuda.set_device(device)
        if options.max_memory_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, options.max_memory_gib * 2**30 / total), device)
    precision = default_precision(device) if options.precision == "auto" else options.precision
    return device, precision


def fingerprint(options: FastOptions, precision: str, n_items: int) -> dict:
    """What part files must match to be resumed: same checkpoint, eval file, precision, BOS mode, items."""
    return {"checkpoint": str(options.checkpoint.resolve()), "eval_file": str(options.eval_file.resolve()),
            "precision": precision, "bos": options.bos, "items": n_items, **({"float8": True} if options.float8 else {})}


def resume(options: FastOptions, topo, docs, precision) -> list[dict]:
    """Rank 0 reads the rows of an earlier run of the same evaluation; every rank learns which are done."""
    from llmhpc.eval.hellaswag import doc_to_request

    resumed = []
    if topo.rank == 0:
        if options.no_resume:
            store.remove_parts(options.predictions)
        queries = [doc_to_request(d)[0] for d in docs]
        resumed = store.read_parts(options.predictions, fingerprint(options, precision, len(docs)), queries)
    return resumed


def main(argv=None) -> int:
    return run(parse_args(argv))


def run(options: FastOptions) -> int:
    """Score with these options in this process (one rank of several where a launcher started them); 0, or 1
    where the accuracy guard failed."""
    log = (lambda *a: None) if options.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    t = {"start": time.perf_counter()}
    if options.device != "cpu":
        cuda_start.begin()  # the GPU's context and cuBLAS while the items are read and LitGPT's model code imported
    prefetch(options.checkpoint)
    kind = "cuda" if options.device == "auto" and torch.cuda.is_available() else options.device.split(":")[0]
    litgpt_core.load()  # LitGPT's model without Lightning (whose import is most of a small job's start-up)
    topo = parallel.init_distributed(options.pipeline_stages, kind)
    device, precision = setup_device(options, topo)
    if options.float8 and (why_not := float8_scoring.problem(device, precision)):
        raise ValueError(why_not)
    docs = read_docs(options.eval_file, options.limit)
    resumed = resume(options, topo, docs, precision)
    done = parallel.broadcast_object({r["index"] for r in resumed}, topo)
    process_group.barrier(topo.world)  # nobody appends before rank 0 has read the parts

    config = SimpleNamespace(**yaml.safe_load((options.checkpoint / "model_config.yaml").read_text()))
    if config.n_layer < topo.stages:
        raise ValueError(f"{config.n_layer} blocks cannot be split over {topo.stages} pipeline stages")
    first, last = parallel.block_ranges(config.n_layer, topo.stages)[topo.stage]
    budget = options.token_budget or DEFAULT_TOKEN_BUDGET[kind if kind == "cuda" else "cpu"]
    prep: dict = {"items": [], "row_batches": []}
    feed: queue.Queue = queue.Queue()
    worker = threading.Thread(target=prepare, args=(options, topo, docs, done, config.block_size, budget,
                                                    kind == "cuda", prep, feed), daemon=True)
    worker.start()
    backend, why = compile_pays(options.compile, device, parameters(vars(config)),
                                sum(doc_size(docs[i]) for i in range(len(docs)) if i not in done))
    compiling = start_warm_up(options.checkpoint, device, precision, backend, options.float8)
    t["load"] = time.perf_counter()
    model, n_params = load_model_part(options.checkpoint, precision, device, first, last, options.load_threads)
    if options.float8:  # the weights' float8 copies and row scales, made once where they already are
        float8_scoring.quantize_blocks(model.transformer.h[i] for i in range(first, last))
    if kind == "cuda":
        torch.cuda.synchronize(device)
    t["loaded"] = time.perf_counter()
    log(f"[rank {topo.rank}] blocks {first}-{last - 1} loaded in {t['loaded'] - t['load']:.1f} s; compile {backend}")
    # the warm-up's seconds on the job's path (waited for before or after scoring); the rest overlaps load and scoring
    compile_wait = time.perf_counter()
    if compiling and options.wait_for_compile:
        while not compiling["ready"].wait(0.1) and "error" not in compiling:
            pass
    compile_wait = time.perf_counter() - compile_wait
    stage = Stage(model, device, first, last, compile=backend or False,
                  compiled_ready=compiling["ready"].is_set if compiling else None)
    rows, score_s = score_rank(options, topo, stage, prep, batches_from(feed))
    worker.join()
    compile_wait += finish_warm_up(compiling, log)
    if "error" in prep:
        raise prep["error"]
    stats = schedule_stats(prep["items"], prep["row_batches"])
    log(f"[rank {topo.rank}] {stats['items']} items in {stats['batches']} batches; {prep['bos_why']}")
    first_batch = prep.get("first_batch_at", t["loaded"])
    mine = {"rows": rows, "score_s": score_s, "load_s": t["loaded"] - t["load"], "stats": stats,
            "phases": {"python_start_s": process_age() - (time.perf_counter() - T0), "imports_s": t["start"] - T0,
                       "setup_s": t["load"] - t["start"], "load_s": t["loaded"] - t["load"],
                       "tokenize_s": prep["tokenize_s"], "schedule_s": prep["schedule_s"],
                       "wait_for_first_batch_s": max(0.0, first_batch - t["loaded"]), "score_s": score_s,
                       "compile_wait_s": compile_wait},
            "compile": {**compile_record(compiling, backend, stage, log), "decision": why},
            "unique_tokens": stats["unique_tokens"] if topo.stage == 0 else 0}
    everyone = parallel.gather_to_rank0(mine, topo)
    failure = None
    if topo.rank == 0:
        failure = write_results(options, topo, everyone, resumed, prep, precision, device, n_params, budget, log)
    process_group.barrier(topo.world)
    process_group.close(topo.world)
    if failure:
        print(failure, file=sys.stderr)
        return 1
    return 0


def write_results(options: FastOptions, topo, everyone, resumed, prep, precision, device, n_params, budget, log) -> str | None:
    """Predictions and metrics (rank 0); the accuracy guard's message when it fails, else None."""
    t_w = time.perf_counter()
    rows = resumed + [r for part in everyone for r in part["rows"]]
    store.write_predictions(options.predictions, rows)
    store.remove_parts(options.predictions)
    n = len(rows)
    score_s = max(p["score_s"] for p in everyone)
    unique = sum(p["unique_tokens"] for p in everyone)
    tflops = 2 * n_params * unique / score_s / 1e12 if score_s else 0.0
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    phases = {k: round(v, 3) for k, v in everyone[0]["phases"].items()}
    phases["score_s"] = round(score_s, 3)
    phases["load_s"] = round(max(p["load_s"] for p in everyone), 3)
    metrics = {
        "checkpoint": str(options.checkpoint), "eval_file": str(options.eval_file), "items": n,
        "acc": sum(r["acc"] for r in rows) / n, "acc_norm": sum(r["acc_norm"] for r in rows) / n,
        "load_s": phases["load_s"], "score_s": phases["score_s"], "wall_s": None,
        "items_per_s": round((n - len(resumed)) / score_s, 3) if score_s else None,
        "bos_prepended": prep["bos_id"] is not None, "precision": precision, "float8": options.float8,
        "device": f"{topo.world} x {name}", "batch_size": None, "token_budget": budget,
        "scorer": FAST.name, "bos": {"mode": options.bos, "id": prep["bos_id"], "decision": prep["bos_why"]},
        "world_size": topo.world, "data_parallel": topo.data_parallel, "pipeline_stages": topo.stages,
        "resumed_items": len(resumed), "parameters": n_params, "unique_tokens_scored": unique,
        "scoring_tflops": round(tflops, 2),
        "mfu": round(tflops / (options.peak_tflops * topo.world), 4) if options.peak_tflops else None,
        "phases_s": phases, "schedule": [p["stats"] for p in everyone if p["stats"]["items"]],
        "compile": everyone[0]["compile"],
    }
    failure = None
    if options.reference_metrics:
        from llmhpc.eval.guard import AccuracyGuardError, check_metrics
        try:
            metrics["accuracy_guard"] = check_metrics(metrics, options.reference_metrics, options.tolerance_pt)
        except AccuracyGuardError as err:
            failure = str(err)
            metrics["accuracy_guard"] = {"ok": False, "error": failure}
    phases["write_s"] = round(time.perf_counter() - t_w, 3)
    metrics["wall_s"] = round(process_age(), 3)  # process start to metrics written
    options.metrics.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(options.metrics, metrics)
    log(f"scored {n} items ({len(resumed)} resumed) from {options.eval_file}: acc {metrics['acc']:.4f} "
        f"acc_norm {metrics['acc_norm']:.4f}; load {phases['load_s']} s, score {score_s:.1f} s, "
        f"whole {metrics['wall_s']} s")
    return failure


def score(options: FastOptions, log=None) -> dict:
    """The program as a function, where the evaluate stage scores in its own process (`log` unused: the program
    logs to stderr): returns the metrics; raises guard.AccuracyGuardError when a reference is given and missed."""
    rc = run(options)
    path = options.metrics
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if rc:
        from llmhpc.eval.guard import AccuracyGuardError
        raise AccuracyGuardError(metrics.get("accuracy_guard", {}).get("error", "accuracy guard failed"))
    return metrics


def score_file(checkpoint_dir, eval_file, predictions_path, metrics_path, limit: int = 0, quiet: bool = True,
               **settings) -> dict:
    """`score` with the evaluate keys given as `settings` (precision="32-true", ...) over the schema's defaults."""
    job = ScoringJob(checkpoint_dir, eval_file, predictions_path, metrics_path)
    return score(FastOptions.from_settings(EvaluateSettings.from_dict(settings), job, limit=limit, quiet=quiet))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if "mpi4py.MPI" in sys.modules:  # started by mpirun: MPI counts a rank that exits without MPI_Finalize as failed
        sys.modules["mpi4py.MPI"].Finalize()
    os._exit(code)  # results are written: skip the interpreter's and CUDA's teardown (seconds on 4 GPUs)
