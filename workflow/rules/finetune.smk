# Stage 5: one fine-tune per experiment, by the engine its finetune.engine names (litgpt: stock LitGPT; fsdp2: the
# workflow's engine). The YAML is written by its own rule, so that it is a file the submission can carry and a
# change to one experiment's settings reruns only that experiment.


rule finetune_config:
    input:
        ENV_MANIFEST,
    output:
        "results/finetune/{experiment}/litgpt.yaml",
    log:
        "results/logs/finetune_config/{experiment}.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        settings=finetune_settings,
    message:
        "Writing the fine-tune config of experiment {wildcards.experiment} (engine {params.settings[engine]})"
    script:
        "../scripts/finetune_config.py"


rule finetune:
    input:
        ENV_MANIFEST,
        config="results/finetune/{experiment}/litgpt.yaml",
        checkpoint="results/checkpoints/base",
        train="results/data/finetune/train.json",
        val="results/data/finetune/val.json",
    output:
        # Only out/final: the step checkpoints beside it (out/step-NNNNNN) survive a failed or killed job, and
        # the rerun resumes from the newest (llmhpc.train.resume).
        final=directory("results/finetune/{experiment}/out/final"),
        stdout="results/finetune/{experiment}/finetune.stdout",
        metrics=report(
            "results/finetune/{experiment}/metrics.csv",
            caption="../report/finetune_metrics.rst",
            category="Fine-tune",
            subcategory="Per experiment",
            labels={"experiment": "{experiment}", "file": "metrics.csv"},
        ),
        summary=report(
            "results/finetune/{experiment}/summary.json",
            caption="../report/finetune_summary.rst",
            category="Fine-tune",
            subcategory="Per experiment",
            labels={"experiment": "{experiment}", "file": "summary.json"},
        ),
    log:
        "results/logs/finetune/{experiment}.log",
    priority: 10  # before any scoring that is ready at the same time (common.smk)
    conda:
        "../../envs/conda.yaml"
    threads: FINETUNE_THREADS
    resources:
        **SLURM_SITE,
        # What the job needs from a scheduler; the cluster profiles turn these into qsub/sbatch options.
        nodes=lambda wc: finetune_settings(wc)["num_nodes"],
        gpus_per_node=lambda wc: finetune_settings(wc)["devices"],
        # Slurm's name for GPUs per node (sbatch --gres); empty on other schedulers and CPU sites.
        gres=finetune_gres,
        # -1: no --cpus-per-task where the site does not give its node shape (the partition's default applies).
        cpus_per_task=SLURM_CPUS_PER_TASK,
        # The GPUs' share of each node's memory, at least what loading the model takes (llmhpc.cluster.resources).
        mem_mb=finetune_mem_mb,
    params:
        settings=finetune_settings,
        peak_tflops=config["hardware"]["peak_tflops"],
    message:
        "Fine-tuning experiment {wildcards.experiment} with the {params.settings[engine]} engine"
        " ({params.settings[method]}, {params.settings[precision]})"
    script:
        "../scripts/finetune.py"
