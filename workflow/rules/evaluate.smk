# Stage 6: HellaSwag-style scoring (lm-evaluation-harness's definition) of the base model and of every
# experiment's fine-tuned model; {model} is `base` or an experiment name.


rule evaluate:
    input:
        ENV_MANIFEST,
        checkpoint=checkpoint_for,
        eval="results/data/eval/hellaswag.jsonl",
    output:
        predictions="results/evaluate/{model}/predictions.jsonl",
        metrics="results/evaluate/{model}/metrics.json",
    log:
        "results/logs/evaluate/{model}.log",
    conda:
        "../../envs/conda.yaml"
    threads: EVALUATE_THREADS
    resources:
        **SLURM_SITE,
        # One GPU unless evaluate.device is cpu (qsub -l ngpus / sbatch --gres on GPU sites).
        gpus_per_node=evaluate_gpus,
        nodes=lambda wc: evaluate_settings(wc)["num_nodes"] if evaluate_gpus(wc) else 1,
        gres=evaluate_gres,
        cpus_per_task=evaluate_cpus_per_task,
        mem_mb=evaluate_mem_mb,
    params:
        settings=evaluate_settings,
    message:
        "Scoring {input.eval} with the {wildcards.model} model (the {params.settings[scorer]} scorer)"
    script:
        "../scripts/evaluate.py"
