# Stage 1: the software environment. Every later stage takes the manifest as input, so changing envs/ reruns them.


rule env:
    input:
        requirements=config["env"]["requirements"],
        build_script="envs/build_venv.sh",
    output:
        manifest=report(ENV_MANIFEST, caption="../report/manifest.rst", category="Environment", labels={"file": "manifest"}),
    params:
        env=config["env"],
    log:
        "results/logs/env.log",
    message:
        "Checking the environment against {input.requirements} ({params.env[mode]})"
    localrule: True
    conda:
        "../../envs/conda.yaml"
    script:
        "../scripts/env.py"
