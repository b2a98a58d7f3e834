# Stage 7: one table over every experiment and stage, with units and the file each number came from.


rule summary:
    input:
        manifest=ENV_MANIFEST,
        finetune=expand("results/finetune/{experiment}/summary.json", experiment=EXPERIMENTS),
        evaluate=expand("results/evaluate/{model}/metrics.json", model=["base", *EXPERIMENTS]),
        train="results/data/finetune/train.json",
        val="results/data/finetune/val.json",
        eval="results/data/eval/hellaswag.jsonl",
        serve=expand("results/serve/{experiment}/metrics.json", experiment=SERVED),
    output:
        report("results/summary.csv", caption="../report/summary.rst", category="Summary", labels={"table": "summary"}),
    log:
        "results/logs/summary.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        run_name=config["run_name"],
        experiments=list(EXPERIMENTS),
        served=SERVED,
    message:
        "Collecting every experiment's figures into {output}"
    script:
        "../scripts/summary.py"
