# The interview slide deck, from the summary table, the environment manifest, the plots and the config's
# `presentation` section. The templates are inputs, so editing one re-renders the slides and nothing upstream.
from llmhpc.snakefile_helpers import cluster_profiles

# Relative to the working directory (as EMBEDDED): Snakemake records input paths, and absolute ones would make a
# moved or copied project render the slides (and pack the submission) again.
SLIDE_TEMPLATES = sorted(
    os.path.relpath(p) for p in Path(workflow.basedir, "workflow/templates").glob("*") if p.is_file()
)


rule slides:
    input:
        summary="results/summary.csv",
        manifest=ENV_MANIFEST,
        plots=expand("results/plots/{plot}.png", plot=PLOT_NAMES),
        templates=SLIDE_TEMPLATES,
    output:
        html=report(
            "results/slides/deck.html",
            caption="../report/slides.rst",
            category="Slides",
            labels={"format": "HTML deck"},
        ),
        pdf=report(
            "results/slides/deck.pdf", caption="../report/slides.rst", category="Slides", labels={"format": "PDF"}
        ),
        pptx=report(
            "results/slides/deck.pptx", caption="../report/slides.rst", category="Slides", labels={"format": "PPTX"}
        ),
        model=report(
            "results/slides/slides.json",
            caption="../report/slides.rst",
            category="Slides",
            labels={"format": "slide model (JSON)"},
        ),
    log:
        "results/logs/slides.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    params:
        presentation=config["presentation"],
        experiments=[
            {"name": e["name"], "notes": e.get("notes", ""), "finetune": e.get("finetune", {})}
            for e in config["experiments"]
        ],
        run_name=config["run_name"],
        model_name=config["model"]["name"],
        run_args=RUN_ARGS,
        profiles=cluster_profiles(Path(workflow.basedir, "profiles")),
    message:
        "Rendering the interview slides (HTML, PDF, PPTX) from {input.summary}"
    script:
        "../scripts/slides.py"
