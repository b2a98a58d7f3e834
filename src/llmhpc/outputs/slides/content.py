"""The slides themselves: what each slide shows, from the figures the deck model keeps."""

from __future__ import annotations

from llmhpc.outputs.slides.figures import DEFAULT_CONFIGFILE, NOT_MEASURED, Figure, Slide, format_value, seg
from llmhpc.outputs.summary_table import JOB_STAGES, PHASE_NAMES, PHASES, phase_sources


class SlideContent:
    """The deck's slides, in order; mixed into DeckBuilder, which keeps the figures they cite."""

    def title_slide(self):
        bullets = [[seg(self.p.team, "config")]]
        if self.p.members:
            bullets.append([seg(", ".join(self.p.members), "config")])
        if self.p.event:
            bullets.append([seg(self.p.event, "config")])
        bullets.append([seg("Run "), seg(self.run_name, "name")])
        self.add(Slide("title", self.p.title, layout="title", bullets=bullets,
                       notes="\n".join(self.p.narrative)))

    def hardware_slide(self):
        rows = []

        def row(label, f):
            if f is not None:
                rows.append([[seg(label)], [self.num(f)]])

        gpus = self.manifest.get("gpus") or []
        row("Host", self.measured("all", "env", "host") or self.from_manifest("host", "host name"))
        row("Platform", self.from_manifest("platform", "operating system and architecture"))
        row("CPU cores", self.from_manifest("cpu_count", "CPU cores seen by Python", "count"))
        if gpus:
            row("GPU", self.measured("all", "env", "gpu_model") or self.from_manifest("gpu_model", "GPU model"))
            gpu_count = self._add(text=str(len(gpus)), value=len(gpus), kind="manifest",
                                  ref={"key": "gpus", "len": True}, source=self.manifest_path,
                                  label="number of GPUs", decimals=0)
            row("GPUs per node", gpu_count)
            mem = gpus[0].get("memory_gb")
            if mem is not None:
                text, scale, dec = format_value(mem, "GB")
                row("GPU memory", self._add(text=text, value=mem, kind="manifest", ref={"key": "gpus.0.memory_gb"},
                                            source=self.manifest_path, label="memory of GPU 0", scale=scale,
                                            decimals=dec))
        else:
            rows.append([[seg("GPU")], [seg("none (CPU run)")]])
        for label, key in (("Python", "python"), ("PyTorch", "torch"), ("LitGPT", "litgpt"), ("CUDA", "cuda")):
            row(label, self.measured("all", "env", key) or self.from_manifest(key, f"{label} version"))
        for label, key in (("Lightning", "lightning"), ("Snakemake", "snakemake"), ("NCCL", "nccl")):
            row(label, self.from_manifest(key, f"{label} version"))
        bullets = [[seg("Devices per fine-tune (world size): ")]]
        sizes = [(n, self.measured(n, "finetune", "world_size")) for n in self.names]
        distinct = {f.value for _, f in sizes if f is not None}
        if len(distinct) == 1:
            bullets[0].append(self.num(sizes[0][1]))
            bullets[0].append(seg(" in every experiment: single device only, no scaling measured" if distinct == {1}
                                  else " in every experiment"))
        else:
            for i, (n, f) in enumerate(sizes):
                bullets[0] += ([seg(", ")] if i else []) + [seg(n, "name"), seg(" "), self.num(f)]
        self.add(Slide("hardware", "Hardware and software", layout="text", bullets=bullets,
                       table={"header": ["Component", "Measured"], "rows": rows},
                       notes="Read from the environment manifest written by the env stage before any other job."))

    def workload_slide(self):
        """The config's words on the workload, then what was fixed, as a table of measured settings."""
        b = self.base
        rows = []
        if self.model_name:
            rows.append([[seg("Model")], [seg(self.model_name, "name")]])
        for label, metric in (("Precision", "precision"), ("Global batch (samples)", "global_batch_size"),
                              ("Micro batch (samples)", "micro_batch_size")):
            f = self.measured(b, "finetune", metric)
            if f is not None:
                rows.append([[seg(label)], [self.num(f)]])
        rows += [
            [[seg("Fine-tune set")], [self.num(self.measured("all", "data", "train_records")), seg(" training, "),
                                      self.num(self.measured("all", "data", "val_records")), seg(" validation records")]],
            [[seg("Evaluation")], [self.num(self.measured("all", "data", "eval_items")),
                                   seg(" items, scored as lm-evaluation-harness scores HellaSwag")]],
            [[seg("Accuracy rule")], [seg("acc at most "), self.num(self.tolerance()),
                                      seg(" below the baseline experiment's")]],
        ]
        bullets = [[seg(w, "config")] for w in self.p.workload]
        self.add(Slide("workload", "The workload and its rules", layout="text", bullets=bullets,
                       table={"header": ["Setting", "Value"], "rows": rows}))

    def what_ran(self, n: str) -> list[dict]:
        """Which engine, method and precision fine-tuned experiment n and which scorer scored it, as the summary
        recorded them: a stock run and an fsdp2 run must not look alike. A run recorded before a field was is said
        to lack it, in words that still read."""
        engine, scorer = self.measured(n, "finetune", "engine"), self.measured(n, "evaluate", "scorer")
        out = [seg("Fine-tuned by the "), self.num(engine), seg(" engine (")] if engine else [
            seg("Fine-tuned (engine not recorded; ")]
        out += [self.num(self.measured(n, "finetune", "method")), seg(", "),
                self.num(self.measured(n, "finetune", "precision")), seg("), ")]
        return out + ([seg("scored by the "), self.num(scorer), seg(" scorer")] if scorer else
                      [seg("scorer not recorded")])

    def resumed(self, n: str) -> list[list[dict]]:
        """A bullet where experiment n's fine-tune was resumed from a step checkpoint (its summary records the
        step and the training time the kill cost), else none."""
        step = self.measured(n, "finetune", "resumed_from_step", unit="count")
        if step is None:
            return []
        lost = self.measured(n, "finetune", "lost_time_s", unit="s")
        return [[seg("Resumed from step "), self.num(step)] + ([seg(" ("), self.num(lost), seg(" lost)")] if lost else [])]

    def random_base(self) -> bool:
        """The base model is the workflow's tiny random-initialised one (model.source tiny): its accuracy is
        chance-level noise, and the slides say so where they show it."""
        return self.model_source == "tiny"

    def baseline_slide(self):
        b = self.base
        notes = self.experiments[0].get("notes", "")
        mem_metric, where = self.memory_metric(b)
        rows = [("Training time", self.measured(b, "finetune", "training_time_s")),
                ("Tokens/s per device", self.measured(b, "finetune", "tokens_per_s_per_device")),
                (f"Peak {where} memory", self.measured(b, "finetune", mem_metric)),
                ("Final training loss", self.measured(b, "finetune", "final_loss")),
                ("Final validation loss", self.measured(b, "finetune", "final_val_loss")),
                ("acc after fine-tuning", self.measured(b, "evaluate", "acc")),
                ("acc of the base model" + (" (random weights)" if self.random_base() else ""),
                 self.measured("base", "evaluate", "acc"))]
        bullets = [self.what_ran(b), *self.resumed(b)] + ([[seg(notes, "config")]] if notes else [])
        self.add(Slide("baseline", "The baseline every experiment is measured against", bullets=bullets,
                       image=self.image("loss"), notes=notes,
                       table={"header": ["Measured", b], "rows": [[[seg(k)], [self.num(f)]] for k, f in rows]}))

    def best(self) -> tuple[str | None, Figure | None]:
        """The fastest experiment whose accuracy stays within tolerance."""
        best, best_fig = None, None
        for n in self.names[1:]:
            sp = self.value(n, "finetune", f"speedup_vs_{self.base}")
            _, ok = self.accuracy_check(n)
            if isinstance(sp, float) and ok and (best_fig is None or sp > best_fig.value):
                best, best_fig = n, self.measured(n, "finetune", f"speedup_vs_{self.base}")
        return best, best_fig

    def optimizations_slide(self):
        rows = []
        for n in self.names:
            rows.append([[seg(n, "name")],
                         [self.num(self.measured(n, "finetune", "training_time_s"))],
                         [self.num(self.measured(n, "finetune", "tokens_per_s_per_device"))],
                         [self.num(self.measured(n, "finetune", f"speedup_vs_{self.base}"))],
                         [self.num(self.measured(n, "evaluate", "acc"))]])
        bullets = [[seg(t, "config")] for t in self.p.narrative]
        best, fig = self.best()
        if best and fig.value > 1.0:
            bullets.insert(0, [seg("Best within the accuracy tolerance: "), seg(best, "name"), seg(", training "),
                               self.num(fig), seg(" faster than the baseline (ratio of training times)")])
        elif len(self.names) > 1:  # none, or the closest is still slower: neither "best" nor "faster"
            closest = [seg("; the closest: "), seg(best, "name"), seg(", time ratio "), self.num(fig)] if best else []
            bullets.insert(0, [seg("No experiment beat the baseline within the accuracy tolerance"), *closest])
        self.add(Slide("optimizations", "From baseline to best", bullets=bullets, image=self.image("throughput"),
                       table={"header": ["Experiment", "Training", "Per device", "Time ratio", "acc"], "rows": rows},
                       notes="\n".join(self.p.narrative)))

    def experiment_slide(self, e: dict):
        """Three big numbers (speed, throughput, accuracy against the baseline), then the baseline and this
        experiment side by side in a table."""
        n, b = e["name"], self.base
        speed = self.measured(n, "finetune", f"speedup_vs_{b}")
        delta, ok = self.accuracy_check(n)
        verdict = "" if ok is None else ": within tolerance" if ok else ": OUTSIDE tolerance"
        stats = [{"label": f"faster training than {b} (time ratio)", "value": [self.num(speed)]},
                 {"label": "tokens/s per device", "value": [self.num(self.measured(n, "finetune",
                                                                                   "tokens_per_s_per_device"))]},
                 {"label": f"acc vs {b}{verdict}", "value": [self.num(delta)]}]
        bullets = ([[seg(e["notes"], "config")]] if e.get("notes") else []) + self.resumed(n)
        overrides = e.get("finetune") or {}
        if overrides:
            bullets.append([seg("Changed: ")] + [seg(", ".join(f"{k} = {v}" for k, v in overrides.items()), "config")])
        mem_metric, where = self.memory_metric(n)
        rows = [[[seg("Engine (method, precision)")], *[[self.num(self.measured(x, "finetune", "engine")), seg(" ("),
                                                          self.num(self.measured(x, "finetune", "method")), seg(", "),
                                                          self.num(self.measured(x, "finetune", "precision")),
                                                          seg(")")] for x in (b, n)]],
                [[seg("Scorer")], *[[self.num(self.measured(x, "evaluate", "scorer"))] for x in (b, n)]]]
        for label, stage, metric in (("Training time", "finetune", "training_time_s"),
                                     ("Tokens/s per device", "finetune", "tokens_per_s_per_device"),
                                     (f"Peak {where} memory", "finetune", mem_metric),
                                     ("Final validation loss", "finetune", "final_val_loss"),
                                     ("acc", "evaluate", "acc")):
            rows.append([[seg(label)], [self.num(self.measured(b, stage, metric))],
                         [self.num(self.measured(n, stage, metric))]])
        self.add(Slide(f"experiment:{n}", f"Optimization: {n}", layout="text", stats=stats, bullets=bullets,
                       table={"header": ["Measured", b, n], "rows": rows}, notes=e.get("notes", "")))

    def accuracy_slide(self):
        tol = self.tolerance()
        rows, outside = [], []
        for n in ["base", *self.names]:
            r = [[seg(n, "name")],
                 [self.num(self.measured(n, "evaluate", "acc"))], [self.num(self.measured(n, "evaluate", "acc_norm"))]]
            if n == "base":
                r += [[seg("random weights" if self.random_base() else "not fine-tuned")], [seg("")]]
            elif n == self.base:
                r += [[seg("reference")], [seg("")]]
            else:
                delta, ok = self.accuracy_check(n)
                r += [[self.num(delta)], [seg("within" if ok else "OUTSIDE" if ok is not None else NOT_MEASURED)]]
                if ok is False:
                    outside.append(n)
            rows.append(r)
        verdict = ([seg("Every experiment is within the tolerance of "), self.num(tol),
                    seg(" below the baseline's acc")] if not outside else
                   [seg("Outside the tolerance of "), self.num(tol), seg(": ")] +
                   [s for i, n in enumerate(outside) for s in ([seg(", ")] if i else []) + [seg(n, "name")]])
        title = "Accuracy kept within tolerance" if not outside else "Accuracy: not all within tolerance"
        bullets = [verdict]
        if self.random_base():
            bullets.append([seg("The base model has random weights (model.source "), seg("tiny", "name"),
                            seg("): its acc is noise around chance, one in four, and may fall below it")])
        self.add(Slide("accuracy", title, bullets=bullets, image=self.image("eval_accuracy"),
                       table={"header": ["Model", "acc", "acc_norm", f"Δ acc vs {self.base}", "Tolerance"],
                              "rows": rows}))

    def inference_slide(self):
        rows = [[[seg(n, "name")],
                 [self.num(self.measured(n, "evaluate", "wall_s"))], [self.num(self.measured(n, "evaluate", "items_per_s"))],
                 [self.num(self.measured(n, "evaluate", "acc"))]] for n in ["base", *self.names]]
        self.add(Slide("inference", "Evaluation: accuracy against time", image=self.image("eval_tradeoff"),
                       table={"header": ["Model", "Wall time", "Scoring speed", "acc"], "rows": rows},
                       bullets=[[seg("Wall time covers loading the checkpoint and scoring every item; the scoring"
                                     " speed is the items over the scoring alone, the load left out")]]))

    def serving_slide(self):
        """Only where serve_check ran: the server's latency and throughput under HELM-shaped load, and its check
        against the model's own greedy text."""
        served = [n for n in self.names if self.value(n, "serve", "requests_per_s") is not None]
        if not served:
            return
        rows = [[[seg(n, "name")], [self.num(self.measured(n, "serve", "p50_latency_s"))],
                 [self.num(self.measured(n, "serve", "p99_latency_s"))],
                 [self.num(self.measured(n, "serve", "requests_per_s"))],
                 [self.num(self.measured(n, "serve", "tokens_per_s"))],
                 [self.num(self.measured(n, "serve", "greedy_matches")), seg(" of "),
                  self.num(self.measured(n, "serve", "greedy_checked"))]] for n in served]
        self.add(Slide("serving", "Serving to HELM", layout="text",
                       bullets=[[seg("llmhpc-serve on the fine-tuned model, HELM-shaped requests from 4 clients;"
                                     " greedy answers compared with the model's own greedy continuation")]],
                       table={"header": ["Model", "p50 latency", "p99 latency", "Requests/s", "Tokens/s",
                                         "Greedy text equal"], "rows": rows}))

    def has(self, experiment, stage, metric) -> bool:
        return self.value(experiment, stage, metric) is not None

    def job_phase_figures(self, name: str, stage: str) -> tuple[Figure, dict[str, Figure | None]] | None:
        """One job's wall and each phase's seconds as figures (summary_table.phase_sources: the job's phase_*_s, or
        the figures that stand in for them), exit the rest of the wall where not recorded; None: no wall yet."""
        wall_metric, sources, _ = phase_sources(self.has, name, stage)
        if wall_metric is None:
            return None
        wall = self.measured(name, stage, wall_metric)
        out = {p: self.measured(name, stage, m) if m else None for p, m in sources.items()}
        if out["exit"] is None:
            rest = self.derived("remainder", [wall, *[f for p, f in out.items() if p != "exit" and f]], "s",
                                f"wall of the {JOB_STAGES[stage]} job of {name} minus its timed phases")
            out["exit"] = rest if rest is None or rest.value >= 0 else None  # overlapping phases: said, not drawn
        return wall, out

    def time_slide(self):
        """The phases of every job (the time-breakdown plot's bars), summed per phase over the fine-tune jobs and
        over the evaluate jobs, and the phase outside the work that costs most."""
        jobs = {"finetune": list(self.names), "evaluate": ["base", *self.names]}
        timed = {(st, n): self.job_phase_figures(n, st) for st, names in jobs.items() for n in names}
        per_job = {job: t[1] if t else None for job, t in timed.items()}
        totals, rows = {}, []
        for phase in PHASES:
            row = [[seg(PHASE_NAMES[phase])]]
            for stage, names in jobs.items():
                figs = [per_job[stage, n][phase] for n in names if per_job[stage, n] and per_job[stage, n][phase]]
                total = self.derived("sum", figs, "s", f"{PHASE_NAMES[phase]} over the {JOB_STAGES[stage]} jobs"
                                     ) if figs else None
                totals[phase, stage] = total
                ran = any(per_job[stage, n] for n in names)  # jobs ran, but none timed this phase on its own
                row.append([self.num(total)] if total or not ran else [seg("not timed")])
            rows.append(row)
        bullets = [[seg("Each job from launch to exit: start-up (python and imports), load, compile warm-up waited"
                        " for, the work (training, scoring), save, exit")]]
        both = {p: self.derived("sum", [f for f in (totals[p, "finetune"], totals[p, "evaluate"]) if f], "s",
                                f"{PHASE_NAMES[p]} over all the jobs")
                for p in PHASES if totals[p, "finetune"] or totals[p, "evaluate"]}
        overhead = {p: f for p, f in both.items() if p != "work" and f is not None and f.value > 0}
        if overhead and both.get("work") is not None:
            worst = max(overhead, key=lambda p: overhead[p].value)
            walls = self.derived("sum", [t[0] for t in timed.values() if t], "s", "wall of all the jobs")
            bullets.append([seg("Costs most outside the work: "), seg(PHASE_NAMES[worst], "name"), seg(", "),
                            self.num(overhead[worst]), seg(" of "), self.num(walls), seg(" over all the jobs")])
        for (st, n), t in timed.items():
            added = self.derived("sum", [f for f in t[1].values() if f], "s", f"phases of the {JOB_STAGES[st]} job"
                                 f" of {n}") if t else None
            if added is not None and added.value > t[0].value + 1:
                bullets.append([seg(n, "name"), seg(f" {JOB_STAGES[st]}: its phases add up to "), self.num(added),
                                seg(", over its wall of "), self.num(t[0]), seg(" (they overlap)")])
        unrecorded = [(n, st) for (st, n), figs in per_job.items() if figs and not phase_sources(self.has, n, st)[2]]
        if unrecorded:
            bullets.append([seg("No phases recorded by "),
                            *[g for i, (n, st) in enumerate(unrecorded)
                              for g in [seg(", ")] * bool(i) + [seg(n, "name"), seg(f" {JOB_STAGES[st]}")]],
                            seg(": start-up counted in load, exit is the rest of the wall")])
        resumed = [n for n in self.names if self.value(n, "finetune", "last_attempt_training_time_s") is not None]
        if resumed:
            bullets.append([seg("Resumed: "), *[g for i, n in enumerate(resumed) for g in [seg(", ")] * bool(i)
                                                + [seg(n, "name")]],
                            seg(": the last attempt's job and its own training time")])
        self.add(Slide("time", "Where the time goes", image=self.image("time_breakdown"),
                       table={"header": ["Phase", "Fine-tune jobs", "Evaluate jobs"], "rows": rows},
                       bullets=bullets))

    def memory_slide(self):
        rows, hosts = [], []
        for n in self.names:
            metric, where = self.memory_metric(n)
            if where == "host":
                hosts.append(n)
            rows.append([[seg(n, "name")], [self.num(self.measured(n, "finetune", metric))],
                         [seg("GPU, as LitGPT reports it" if where == "GPU" else "host, peak resident memory")]])
        bullets = []
        if hosts:
            bullets.append([seg("GPU memory: not measured on a CPU run; the host's peak resident memory instead")])
        self.add(Slide("memory", "Memory", image=self.image("memory"), bullets=bullets,
                       table={"header": ["Experiment", "Peak", "Measured on"], "rows": rows}))

    def scaling_slide(self):
        """Only where experiments ran on different numbers of devices: one world size measures no scaling (the
        hardware slide says "single device only" then)."""
        sizes = {n: self.value(n, "finetune", "world_size") for n in self.names}
        if len({v for v in sizes.values() if v is not None}) < 2:
            return
        ref = min((n for n in self.names if sizes[n] is not None), key=lambda n: sizes[n])
        ref_tps = self.measured(ref, "finetune", "tokens_per_s_per_device")
        rows = []
        for n in sorted((n for n in self.names if sizes[n] is not None), key=lambda n: (sizes[n], self.names.index(n))):
            per_dev = self.measured(n, "finetune", "tokens_per_s_per_device")
            eff = self.derived("ratio", [per_dev, ref_tps], "fraction",
                               f"tokens/s per device of {n} over that of {ref}")
            rows.append([[seg(n, "name")], [self.num(self.measured(n, "finetune", "world_size"))],
                         [self.num(self.measured(n, "finetune", "tokens_per_s"))], [self.num(per_dev)],
                         [self.num(eff)]])
        self.add(Slide("scaling", "Scaling", layout="text",
                       bullets=[[seg("Efficiency: tokens/s per device against the smallest run, "), seg(ref, "name")]],
                       table={"header": ["Experiment", "Devices", "Tokens/s", "Per device", "Efficiency"],
                              "rows": rows}))

    def losers(self) -> list[list]:
        """Table rows for the experiments that lost: slower than the baseline, or outside the accuracy tolerance."""
        rows = []
        for n in self.names[1:]:
            sp = self.measured(n, "finetune", f"speedup_vs_{self.base}")
            slower = sp is not None and isinstance(sp.value, float) and sp.value < 1
            delta, ok = self.accuracy_check(n)
            if not slower and ok is not False:
                continue
            why = []
            if slower:
                why.append(seg("slower than the baseline"))
            if ok is False:
                why += ([seg("; ")] if why else []) + [seg("acc more than "), self.num(self.tolerance()),
                                                         seg(" below the baseline")]
            rows.append([[seg(n, "name")], [self.num(sp)], [self.num(delta)], why])
        return rows

    def did_not_work_slide(self):
        """The experiments that lost, measured, and the config's notes on what else was tried; no slide when
        there is nothing to say."""
        bullets = [[seg(t, "config")] for t in self.p.did_not_work]
        rows = self.losers()
        if not bullets and not rows:
            return
        table = {"header": ["Experiment", "Time ratio", f"Δ acc vs {self.base}", "Why it lost"], "rows": rows}
        # beside the table, the plot that shows the loss: accuracy against the allowed floor, else throughput
        lost_acc = any(self.accuracy_check(r[0][0]["text"])[1] is False for r in rows)
        self.add(Slide("did_not_work", "What did not work", bullets=bullets, table=table if rows else None,
                       image=self.image("eval_tradeoff" if lost_acc else "throughput") if rows else None,
                       layout="split" if rows else "text"))

    def reproduce_slide(self):
        requirements = self.manifest.get("requirements") or "envs/cpu.txt"
        # the config is named even where the run used the Snakefile's default, so that the command says what ran
        named = self.run_args if "--configfile" in self.run_args else f"--configfile {DEFAULT_CONFIGFILE} {self.run_args}"
        args = " " + named.strip()
        code = [f"python3 -m venv .venv && .venv/bin/pip install -r {requirements} -e .   # set up",
                f". .venv/bin/activate && snakemake{args} --   # every stage, this deck included"]
        code += [f"snakemake --profile {p}{args} --   # on the cluster" for p in self.profiles]
        code += [f"snakemake --forcerun finetune{args} --   # redo the fine-tunes and what follows",
                 f"snakemake --forcerun slides{args} --   # re-render the slides and repack the submission"]
        commit = self.measured("all", "env", "git_commit") or self.from_manifest("git_commit", "git commit")
        bullets = [[seg("Git commit: "), self.num(commit)],
                   [seg("Every measured number in this deck is a row of "), seg(self.summary_path, "name"),
                    seg(" (which names the file it came from) or of the environment manifest; the speaker notes "
                        "give each number's source")]]
        self.add(Slide("reproduce", "How to reproduce", layout="text", code=code, bullets=bullets,
                       notes="The commands, in order: set up the environment, run everything, run on a cluster "
                             "profile, rerun the fine-tunes (and what follows), re-render the slides (and repack the "
                             "submission that carries them)."))
