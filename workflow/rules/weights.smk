# Stage 2: the base model's weights in Hugging Face format: made (tiny), downloaded (hf) or linked (path).
# A local rule: downloads need the internet, which cluster compute nodes lack.


rule weights:
    input:
        ENV_MANIFEST,
    output:
        directory("results/weights/hf"),
    params:
        model=config["model"],
    log:
        "results/logs/weights.log",
    message:
        "Getting the {params.model[source]} weights of {params.model[name]}"
    localrule: True
    conda:
        "../../envs/conda.yaml"
    script:
        "../scripts/weights.py"
