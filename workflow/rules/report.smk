# `snakemake report`: the design card's spelling of `snakemake --report results/report.html`. The rule runs the
# same workflow's --report (with this run's config files and --config values) once everything else is made.


rule report:
    input:
        get_final_output(),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        python=sys.executable,
        args=RUN_ARGS,
    message:
        "Building the Snakemake report {output}"
    shell:
        # --nolock: this run holds the working directory's lock; the report only reads its metadata.
        "{params.python:q} -m snakemake --report {output} --nolock {params.args} > {log} 2>&1"
