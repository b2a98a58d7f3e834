# Serving check (seed 004): each checked experiment's fine-tuned model served by llmhpc-serve on loopback,
# answered HELM's requests, compared with the model's greedy continuation, load-tested; only with serve.enabled.


def serve_experiments():
    chosen = config["serve"]["experiments"]
    unknown = [name for name in chosen if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"serve.experiments names {unknown}, which are not experiments: {list(EXPERIMENTS)}")
    return chosen or list(EXPERIMENTS)


def serve_gpus(wildcards):
    return resources.evaluate_gpus({"device": config["serve"]["device"]}, config["site"])


def serve_gres(wildcards):
    return resources.slurm_gres(config["site"], serve_gpus(wildcards))


rule serve_check:
    input:
        ENV_MANIFEST,
        checkpoint="results/finetune/{experiment}/out",
        eval="results/data/eval/hellaswag.jsonl",
    output:
        metrics="results/serve/{experiment}/metrics.json",
    log:
        log="results/logs/serve_check/{experiment}.log",
        server="results/logs/serve_check/{experiment}.server.log",
    conda:
        "../../envs/conda.yaml"
    threads: GPU_JOB_THREADS
    resources:
        # Host memory for the checkpoint (memory-mapped, then moved to the GPU) and the server; the profiles'
        # set-resources may raise it.
        mem_mb=16000,
        runtime=60,
        gpus_per_node=serve_gpus,
        gres=serve_gres,
        cpus_per_task=SLURM_CPUS_PER_TASK,
    params:
        settings=config["serve"],
    message:
        "Serving the {wildcards.experiment} model to HELM-shaped requests on loopback: checks and a load test"
    script:
        "../scripts/serve_check.py"
