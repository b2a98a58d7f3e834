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
    threads: workflow.cores
    log:
        "results/logs/infer/{model}.log",
    message:
        "Scoring {input.eval} with the {wildcards.model} model"
    conda:
        "../../envs/conda.yaml"
    script:
        "../scripts/infer.py"
