# Serving check (seed 004): each checked experiment's fine-tuned model served by llmhpc-serve on loopback,
# answered HELM's requests, compared with the model's greedy continuation, load-tested; only with serve.enabled.


rule serve_check:
    input:
        ENV_MANIFEST,
        checkpoint="results/finetune/{experiment}/out/final",
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
        **SLURM_SITE,
        # Host memory for the checkpoint (memory-mapped, then moved to the GPU) and the server: as evaluate's.
        mem_mb=lambda wildcards: resources.gpu_job_mem_mb(SITE, config["model"]["name"], 1),
        runtime=60,
        # One GPU unless serve.device is cpu (qsub -l ngpus / sbatch --gres on GPU sites), as evaluate.
        gpus_per_node=lambda wildcards: resources.evaluate_gpus({"device": config["serve"]["device"]}, SITE),
        gres=lambda wildcards: resources.slurm_gres(
            SITE, resources.evaluate_gpus({"device": config["serve"]["device"]}, SITE)
        ),
        cpus_per_task=SLURM_CPUS_PER_TASK,
    params:
        settings=config["serve"],
    message:
        "Serving the {wildcards.experiment} model to HELM-shaped requests on loopback: checks and a load test"
    script:
        "../scripts/serve_check.py"
