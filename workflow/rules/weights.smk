# Stage 2: the base model's weights in Hugging Face format: made (tiny), downloaded (hf) or linked (path).
# A local rule: downloads need the internet, which cluster compute nodes lack.


rule weights:
    input:
        ENV_MANIFEST,
    output:
        directory("results/weights/hf"),
    log:
        "results/logs/weights.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        model=config["model"],
    message:
        "Getting the {params.model[source]} weights of {params.model[name]}"
    script:
        "../scripts/weights.py"
