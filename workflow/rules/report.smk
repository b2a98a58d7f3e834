# `snakemake report`: the design card's spelling of `snakemake --report results/report.html`. The rule runs the
# same workflow's --report (with this run's config files and --config values) once everything else is made.


rule report:
    input:
        get_final_output(),
    output:
        "results/report.html",
    params:
        python=sys.executable,
        args=RUN_ARGS,
    log:
        "results/logs/report.log",
    message:
        "Building the Snakemake report {output}"
    localrule: True
    conda:
        "../../envs/conda.yaml"
    shell:
        # --nolock: this run holds the working directory's lock; the report only reads its metadata.
        "{params.python:q} -m snakemake --report {output} --nolock {params.args} > {log} 2>&1"
