# Stage 1: the software environment. Every later stage takes the manifest as input, so changing envs/ reruns them.


rule env:
    input:
        requirements=config["env"]["requirements"],
        build_script="envs/build_venv.sh",
    output:
        manifest=report(
            ENV_MANIFEST, caption="../report/manifest.rst", category="Environment", labels={"file": "manifest"}
        ),
    log:
        "results/logs/env.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        env=config["env"],
    message:
        "Checking the environment against {input.requirements} ({params.env[mode]})"
    script:
        "../scripts/env.py"
