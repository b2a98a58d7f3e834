# Stage 6: HellaSwag-style scoring (lm-evaluation-harness's definition) of the base model and of every
# experiment's fine-tuned model; {model} is `base` or an experiment name.


rule infer:
    input:
        ENV_MANIFEST,
        checkpoint=checkpoint_for,
        eval="results/data/eval/hellaswag.jsonl",
    output:
        predictions="results/infer/{model}/predictions.jsonl",
        metrics="results/infer/{model}/metrics.json",
    params:
        settings=infer_settings,
    threads: GPU_JOB_THREADS
    resources:
        # One GPU unless infer.device is cpu (qsub -l ngpus / sbatch --gres on GPU sites).
        gpus_per_node=infer_gpus,
        gres=infer_gres,
        cpus_per_task=SLURM_CPUS_PER_TASK,
    log:
        "results/logs/infer/{model}.log",
    message:
        "Scoring {input.eval} with the {wildcards.model} model"
    conda:
        "../../envs/conda.yaml"
    script:
        "../scripts/infer.py"
