# Stage 4: the fine-tune set (Alpaca JSON) and the evaluation set (HellaSwag schema), checked record by record.
# Local rules: hub datasets need the internet.


rule data_finetune:
    input:
        ENV_MANIFEST,
        finetune_data_input,
    output:
        train="results/data/finetune/train.json",
        val="results/data/finetune/val.json",
    log:
        "results/logs/data_finetune.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        source=config["data"]["finetune"],
        embedded=EMBEDDED,
    message:
        "Preparing the fine-tune set ({params.source[source]})"
    script:
        "../scripts/data_finetune.py"


rule data_eval:
    input:
        ENV_MANIFEST,
        eval_data_input,
    output:
        "results/data/eval/hellaswag.jsonl",
    log:
        "results/logs/data_eval.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        source=config["data"]["eval"],
        embedded=EMBEDDED / "hellaswag.jsonl",
    message:
        "Preparing the evaluation set ({params.source[source]})"
    script:
        "../scripts/data_eval.py"
