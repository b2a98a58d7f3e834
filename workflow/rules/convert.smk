# Stage 3: litgpt convert_to_litgpt into a LitGPT checkpoint directory, then a load check.


rule convert:
    input:
        ENV_MANIFEST,
        weights="results/weights/hf",
    output:
        directory("results/checkpoints/base"),
    log:
        "results/logs/convert.log",
    conda:
        "../../envs/conda.yaml"
    resources:
        **SLURM_SITE,
        # sized from the model: a 7B model needs about 24 GB (llmhpc.cluster.resources.convert_mem_mb)
        mem_mb=resources.convert_mem_mb(config["model"]["name"]),
    params:
        model_name=config["model"]["name"],
    message:
        "Converting {input.weights} to a LitGPT checkpoint ({params.model_name})"
    script:
        "../scripts/convert.py"
