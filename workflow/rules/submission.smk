# The submission bundle the competitions ask for: build, setup and run scripts, LitGPT configs, output texts and
# the slides as PDF in one reproducible tar.gz with a MANIFEST; never weights, never secrets (llmhpc.stages.submission).
import hashlib
import json

from llmhpc.stages.submission import archive_name, layout

# The run name and its engines, scorers and precisions, unless submission.name is set (archive_name).
SUBMISSION_NAME = archive_name(config, EXPERIMENTS)
SUBMISSION_CONFIGFILES = [str(p) for p in workflow.config_settings.configfiles]
# Every file the bundle always carries; results/jobs and results/logs are added at run time, as they hold
# whatever the run's jobs and cluster profiles wrote.
SUBMISSION_INPUTS = [
    str(source) for source, _ in layout(EXPERIMENTS, configfiles=SUBMISSION_CONFIGFILES, served=SERVED)
]
# The bundle carries the effective config: any change to it remakes the bundle (a digest keeps -n readable). JSON
# with sorted keys: C speed at every parse, where a YAML dump took ~0.02 s.
SUBMISSION_CONFIG_SHA256 = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


rule submission:
    input:
        summary="results/summary.csv",
        manifest=ENV_MANIFEST,
        slides="results/slides/deck.pdf",
        files=SUBMISSION_INPUTS,
    output:
        archive=report(
            f"results/submission/{SUBMISSION_NAME}.tar.gz",
            caption="../report/submission.rst",
            category="Submission",
            labels={"file": f"{SUBMISSION_NAME}.tar.gz"},
        ),
        checksum=f"results/submission/{SUBMISSION_NAME}.sha256",
    log:
        "results/logs/submission.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        name=SUBMISSION_NAME,
        run_name=config["run_name"],
        experiments=list(EXPERIMENTS),
        served=SERVED,
        configfiles=SUBMISSION_CONFIGFILES,
        max_file_mb=config["submission"]["max_file_mb"],
        config_sha256=SUBMISSION_CONFIG_SHA256,
        # The report rule runs after the bundle: its log would describe the previous run.
        exclude=["results/logs/report.log"],
    message:
        "Packing the submission bundle {output.archive}"
    script:
        "../scripts/submission.py"
