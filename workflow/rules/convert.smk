# Stage 3: litgpt convert_to_litgpt into a LitGPT checkpoint directory, then a load check.


rule convert:
    input:
        ENV_MANIFEST,
        weights="results/weights/hf",
    output:
        directory("results/checkpoints/base"),
    params:
        model_name=config["model"]["name"],
    log:
        "results/logs/convert.log",
    message:
        "Converting {input.weights} to a LitGPT checkpoint ({params.model_name})"
    conda:
        "../../envs/conda.yaml"
    script:
        "../scripts/convert.py"
