"""The batching engine: continuous batching of concurrent requests on one model, a KV cache slot per sequence.

LitGPT's own KV cache holds `max_batch` slots (rows) of `max_seq_length` positions; LitGPT's forward takes a
position per row, so one decode step advances every active sequence at its own length. Active sequences occupy
slots 0..B-1: a finished one's slot is refilled by moving the last sequence's cache into it, so a step reads the
first B rows only. New requests are prefilled together (right-padded: the padding's keys sit beyond each row's
length and are overwritten before any query can see them) into free slots between decode windows, so a new
request waits at most one window. The model work itself is fastpath.FastPath (a lean forward, attention over
the positions in use, CUDA graphs of the decode step on GPUs) or, for configs it does not cover and as the
reference it is checked against, reference.LitGPTPath. Decode steps run in windows of up to `sync_every`, each
step's tokens chosen on the device and fed to the next; the window's tokens, log-probabilities and top
alternatives come to the host in one transfer. Requests wait in a bounded queue; `submit` refuses when it is
full (the app answers 503). A request whose client went away is cancelled and its slots freed at the next
window. All model work happens on the engine's one thread."""

from __future__ import annotations

import collections
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch

from llmhpc.serve import sampling, timing
from llmhpc.serve.fastpath import FastPath, batch_buckets, unsupported
from llmhpc.serve.reference_path import LitGPTPath
from llmhpc.serve.schema import ProcessRequest
from llmhpc.serve.timing import StepTimes


class QueueFull(Exception):
    pass


class BadRequest(ValueError):
    pass


@dataclass
class Job:
    request: ProcessRequest
    prompt_ids: list[int]
    echo_from: int  # the first prompt token echoed (1 when the tokenizer added BOS)
    on_done: Callable[[dict | BaseException], None]
    cancelled: bool = False  # the client went away
    answered: bool = False
    prompt_logprobs: list = field(default_factory=list)  # (logprob, tops) of prompt tokens 1.. (echo only)
    sequences: list = field(default_factory=list)


@dataclass
class Seq:
    job: Job
    index: int
    slot: int
    length: int = 0  # positions written in the cache
    pending: int | None = None  # chosen, not yet fed
    ids: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)
    tops: list = field(default_factory=list)
    generator: torch.Generator | None = None
    done: bool = False
    text: str = ""  # the text of ids[:text_ids], kept for the stop-sequence check
    text_ids: int = 0


class Engine:
    def __init__(self, model, tokenizer, max_batch: int = 16, queue_size: int = 64, prefill_tokens: int = 8192,
                 path: str = "fast", kv_bucket: int = 256, cuda_graphs: bool = False, profile_out=None,
                 compile_pointwise: bool = False, sync_every: int = 8):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.max_batch, self.queue_size, self.prefill_tokens = max_batch, queue_size, max(prefill_tokens, 1)
        self.sync_every = max(1, sync_every)  # decode steps between two transfers to the host
        self.max_seq_length = model.max_seq_length
        self.vocab = min(sampling.tokenizer_vocab(tokenizer), model.config.padded_vocab_size)
        model.set_kv_cache(batch_size=max_batch, device=self.device, dtype=next(model.parameters()).dtype)
        self.caches = [block.attn.kv_cache for block in model.transformer.h]
        self.why_reference = "asked for" if path == "reference" else unsupported(model.config)
        if self.why_reference:
            self.path = LitGPTPath(model, self.caches, self.vocab)
        else:
            self.path = FastPath(model, self.caches, self.vocab, kv_bucket, cuda_graphs and self.device.type == "cuda",
                                 compile_pointwise)
        self.times = StepTimes(profile_out, set(batch_buckets(max_batch)))
        self.waiting: collections.deque[Job] = collections.deque()
        self.active: list[Seq] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.steps = 0
        self.peak_batch = 0  # most sequences decoded in one step
        self.cancelled = 0  # requests whose client went away before the answer

    # ------------------------------------------------------------------------------------------- requests
    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(torch.tensor(ids, dtype=torch.long)) if ids else ""

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).tolist()

    def make_job(self, request: ProcessRequest, on_done=None) -> Job:
        """Tokenize and check what depends on the model; BadRequest says what to change."""
        ids = self.encode(request.prompt)
        if not ids:
            raise BadRequest("prompt encodes to no tokens (an empty prompt with a tokenizer that adds no BOS)")
        if len(ids) + request.max_new_tokens > self.max_seq_length:
            raise BadRequest(f"prompt ({len(ids)} tokens) + max_new_tokens ({request.max_new_tokens}) exceeds the"
                             f" server's max_seq_length {self.max_seq_length}: truncate the prompt (/tokenize with"
                             " max_length) or ask for fewer tokens")
        if request.n > self.max_batch:
            raise BadRequest(f"num_return_sequences {request.n} exceeds the server's max_batch {self.max_batch}")
        bos = self.tokenizer.bos_id
        echo_from = 1 if self.tokenizer.use_bos and bos is not None and ids[0] == bos else 0
        return Job(request, ids, echo_from, on_done or (lambda result: None))

    def submit(self, job: Job) -> None:
        with self.cond:
            if len(self.waiting) >= self.queue_size:
                raise QueueFull(f"the request queue is full ({self.queue_size} waiting): retry later")
            self.waiting.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the job's sequences are dropped at the next step, their slots freed."""
        with self.cond:
            if not job.cancelled and not job.answered:
                job.cancelled = True
                self.cancelled += 1

    def load(self) -> dict:
        with self.cond:
            return {"waiting": len(self.waiting), "active": len(self.active), "max_batch": self.max_batch,
                    "queue_size": self.queue_size, "steps": self.steps,
                    "peak_batch": self.peak_batch, "cancelled": self.cancelled,
                    "path": "reference" if self.why_reference else "fast",
                    "cuda_graphs": len(self.path.graphs.graphs) if self.path.graphs else 0, **self.times.summary()}

    def warm_up(self) -> int:
        """Before serving rather than on first use: with --compile, the prefill's shapes compiled; the decode
        step's CUDA graphs captured. How many graphs."""
        try:
            with torch.inference_mode():
                if self.path.compiled:
                    self._warm_prefill()
                return self.path.graphs.warm_up() if self.path.graphs is not None else 0
        except Exception as err:  # serve eagerly rather than not at all
            if self.path.compiled:  # the compile failed (no compiler, ...): without it
                print(f"llmhpc-serve: --compile off, it failed ({type(err).__name__}: {err})".splitlines()[0],
                      file=sys.stderr, flush=True)
                self.path.uncompile()
                if self.path.graphs is not None:
                    self.path.graphs.graphs.clear()
                return self.warm_up()
            print(f"llmhpc-serve: CUDA graphs off, the capture failed ({err})", file=sys.stderr, flush=True)
            self.path.graphs = None
            return 0

    def _warm_prefill(self) -> None:
        """Prefills of one row and of several, of one token and of more, with and without echoed prompts: the
        compiled ops specialise sizes 0 and 1, so each kind is compiled once here (measured on an H200: ~4 s at the
        first batched prefill otherwise). Their keys and values land in free slots, overwritten before use."""
        for rows, tokens, full in ((1, 1, False), (1, 9, True), (2, 1, False), (3, 9, True)):
            rows = min(rows, self.max_batch)
            self.path.prefill([[1] * tokens] * rows, 0, [full] + [False] * (rows - 1))

    # ------------------------------------------------------------------------------------------- the loop
    def start(self) -> None:
        if self.thread is None:
            self.stopping = False
            self.thread = threading.Thread(target=self._loop, name="llmhpc-serve-engine", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(timeout=30)
            self.thread = None

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self.cond:
                    while not self.stopping and not self.waiting and not self.active:
                        self.cond.wait(timeout=1.0)
                    if self.stopping:
                        return
                    admitted = self._admit()
                try:
                    self.run_once(admitted)
                except Exception as err:  # a failed step fails its requests, never the server
                    jobs = {id(j): j for j in [s.job for s in self.active] + admitted}
                    for job in jobs.values():
                        if not job.answered:
                            job.answered = True
                            job.on_done(err)
                    self.active = []

    def _admit(self) -> list[Job]:
        """Waiting jobs, first come first served, while slots are free and the padded prefill (rows x longest
        prompt) stays within prefill_tokens (the first job always goes)."""
        jobs, free, rows, width = [], self.max_batch - len(self.active), 0, 0
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft()
                continue
            n, wide = job.request.n, max(width, len(job.prompt_ids))
            if n > free or (jobs and (rows + n) * wide > self.prefill_tokens):
                break
            jobs.append(self.waiting.popleft())
            free, rows, width = free - n, rows + n, wide
        return jobs

    def run_once(self, admitted: list[Job]) -> None:
        """Prefill what was admitted, then one decode step of every active sequence, then free finished slots."""
        for seq in self.active:
            if seq.job.cancelled:
                seq.done = True
        self._compact()
        if admitted:
            self._prefill(admitted)
            self._compact()
        if self.active:
            self._decode_window()
            self._compact()
        self.steps += 1

    # ------------------------------------------------------------------------------------------- model work
    def _prefill(self, jobs: list[Job]) -> None:
        with self.times.prefill(sum(len(job.prompt_ids) * job.request.n for job in jobs)):
            rows = []
            for job in jobs:
                for i in range(job.request.n):
                    seed = job.request.seed
                    gen = torch.Generator(device=self.device)
                    gen.manual_seed((seed + i) % 2**63 if seed is not None else torch.seed())
                    seq = Seq(job, i, len(self.active) + len(rows), generator=gen)
                    job.sequences.append(seq)
                    rows.append(seq)
            full = [s.index == 0 and s.job.request.echo_prompt for s in rows]
            last, scored = self.path.prefill([s.job.prompt_ids for s in rows], rows[0].slot, full)
            for seq, logits in zip(rows, scored):
                seq.length = len(seq.job.prompt_ids)
                if logits is not None:
                    target = torch.tensor(seq.job.prompt_ids[1:], device=self.device)
                    lps, tops = sampling.token_logprobs(logits, target, seq.job.request.top_k_per_token)
                    seq.job.prompt_logprobs = list(zip(lps, tops))
            self.active.extend(rows)
            self._advance(rows, last)

    def _decode_window(self) -> None:
        """Up to sync_every decode steps of every active sequence, each step's tokens chosen on the device and fed
        straight to the next, with one transfer to the host at the end: the host's bookkeeping (stop checks,
        answers) runs while no step waits for it. A sequence that finishes inside the window has its later tokens
        discarded (its slot is freed after the window); a new request waits at most the window's steps."""
        live = self.active
        n, top = len(live), max(s.length for s in live)
        self.peak_batch = max(self.peak_batch, n)
        k = min(self.sync_every, max(s.job.request.max_new_tokens - len(s.ids) for s in live))
        if self.times.profile_due(n, k):  # the window ends before the profiled step, which then runs alone
            before = self.times.steps_before_profile(n)
            k = before or 1
            if not before and self.path.graphs is not None:  # that step, without its graph
                with timing.profiled(self.times.profile_out, f"eager decode step (no CUDA graph), batch {n}"):
                    self.path.decode([s.pending for s in live], [s.length for s in live], eager=True)
        params, generators = [s.job.request for s in live], [s.generator for s in live]
        with self.times.step(n, k):
            inp = torch.tensor([[s.pending for s in live], [s.length for s in live]]).to(self.device)
            tokens, positions, packs = inp[0], inp[1], []
            for _ in range(k):
                logits = self.path.decode_device(tokens, positions, top)
                tokens, packed = sampling.pick_device(logits, params, generators)
                packs.append(packed)
                # rows that finished earlier in the window go on past their end: kept inside their own slot
                positions = (positions + 1).clamp_(max=self.max_seq_length - 1)
                top = min(top + 1, self.max_seq_length - 1)
            for step in torch.stack(packs).tolist():  # the window's one transfer
                for seq, row in zip(live, step):
                    if not seq.done:
                        seq.length += 1
                        self._append(seq, *sampling.unpack(row, seq.job.request.top_k_per_token))
            self._answer_finished(live)

    def _advance(self, seqs: list[Seq], logits: torch.Tensor) -> None:
        """Choose each sequence's next token from its logits (B, V) and decide whether it is finished."""
        open_ = [i for i, s in enumerate(seqs) if not s.done and len(s.ids) < s.job.request.max_new_tokens]
        for i, s in enumerate(seqs):
            if i not in open_:
                s.done = True
        if open_:
            rows = logits if len(open_) == len(seqs) else logits[open_]
            picked = sampling.pick(rows, [seqs[i].job.request for i in open_], [seqs[i].generator for i in open_])
            for i, (token, logprob, tops) in zip(open_, picked):
                self._append(seqs[i], token, logprob, tops)
        self._answer_finished(seqs)

    def _answer_finished(self, seqs: list[Seq]) -> None:
        for job in {id(s.job): s.job for s in seqs}.values():
            if all(s.done for s in job.sequences) and not job.answered and not job.cancelled:
                job.answered = True
                job.on_done(self._answer(job))

    def _append(self, seq: Seq, token: int, logprob: float, tops: list) -> None:
        req = seq.job.request
        if token == self.tokenizer.eos_id:
            seq.done = True
            return
        seq.ids.append(token)
        seq.logprobs.append(logprob)
        seq.tops.append(tops)
        seq.pending = token
        if len(seq.ids) >= req.max_new_tokens or self._stopped(seq):
            seq.done = True

    def _stopped(self, seq: Seq) -> bool:
        """Whether a stop sequence appeared, checking only the text the new token added (and the stop's length
        before it)."""
        stops = [s for s in seq.job.request.stop_sequences if s]
        if not stops:
            return False
        new, seq.text_ids = sampling.extend_text(self.decode, seq.ids, seq.text_ids)
        if not new:
            return False
        seen = len(seq.text)
        seq.text += new
        return sampling.first_stop(seq.text[max(0, seen - max(map(len, stops)) + 1):], stops) >= 0

    def _compact(self) -> None:
        """Drop finished sequences; move the last live ones into the freed low slots (their cache rows too)."""
        keep = [s for s in self.active if not s.done]
        free = sorted(s.slot for s in self.active if s.done and s.slot < len(keep))
        movers = [s for s in keep if s.slot >= len(keep)]
        for seq, slot in zip(movers, free):
            for cache in self.caches:
                cache.k[slot, :, :seq.length] = cache.k[seq.slot, :, :seq.length]
                cache.v[slot, :, :seq.length] = cache.v[seq.slot, :, :seq.length]
            seq.slot = slot
        self.active = sorted(keep, key=lambda s: s.slot)

    # ------------------------------------------------------------------------------------------- answers
    def _tokens(self, ids, logprobs, tops) -> list[dict]:
        texts = sampling.token_texts(self.decode, ids)
        return [{"text": t, "logprob": lp, "top_logprob": {self.decode([i]): v for i, v in top}}
                for t, lp, top in zip(texts, logprobs, tops)]

    def _answer(self, job: Job) -> dict:
        req = job.request
        echo = []
        if req.echo_prompt:
            ids = job.prompt_ids[job.echo_from:]
            scored = [(0.0, [])] + job.prompt_logprobs  # the first prompt token has no context
            echo = self._tokens(ids, *zip(*scored[job.echo_from:])) if ids else []
        completions = []
        for seq in sorted(job.sequences, key=lambda s: s.index):
            tokens = self._tokens(seq.ids, seq.logprobs, seq.tops)
            text = "".join(t["text"] for t in tokens)
            cut = sampling.first_stop(text, req.stop_sequences)
            if cut >= 0:
                texts = [t["text"] for t in tokens]
                kept = sampling.cut_at(texts, cut)
                tokens = [{**t, "text": x} for t, x in zip(tokens[:kept], texts)]
                text = text[:cut]
            if req.echo_prompt:
                tokens, text = echo + tokens, req.prompt + text
            completions.append({"text": text, "tokens": tokens, "logprob": sum(t["logprob"] for t in tokens)})
        return {**completions[0], "completions": completions}

