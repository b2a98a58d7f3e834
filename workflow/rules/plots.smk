# Stage 8: the figures (PNG for slides and the report, SVG to edit), drawn from the summary table, each
# experiment's metrics.csv and the environment manifest. The names are fixed (llmhpc.PLOT_NAMES): the
# slides refer to them.


rule plots:
    input:
        summary="results/summary.csv",
        metrics=expand("results/finetune/{experiment}/metrics.csv", experiment=EXPERIMENTS),
        manifest=ENV_MANIFEST,
    output:
        loss=report(
            "results/plots/loss.png",
            caption="../report/loss.rst",
            category="Fine-tune",
            labels={"figure": "training loss"},
        ),
        throughput=report(
            "results/plots/throughput.png",
            caption="../report/throughput.rst",
            category="Fine-tune",
            labels={"figure": "throughput"},
        ),
        time_breakdown=report(
            "results/plots/time_breakdown.png",
            caption="../report/time_breakdown.rst",
            category="Fine-tune",
            labels={"figure": "time breakdown"},
        ),
        memory=report(
            "results/plots/memory.png",
            caption="../report/memory.rst",
            category="Fine-tune",
            labels={"figure": "peak memory"},
        ),
        eval_accuracy=report(
            "results/plots/eval_accuracy.png",
            caption="../report/eval_accuracy.rst",
            category="Evaluation",
            labels={"figure": "accuracy"},
        ),
        eval_tradeoff=report(
            "results/plots/eval_tradeoff.png",
            caption="../report/eval_tradeoff.rst",
            category="Evaluation",
            labels={"figure": "accuracy against time"},
        ),
        accuracy_samples=report(
            "results/plots/accuracy_samples.png",
            caption="../report/accuracy_samples.rst",
            category="Evaluation",
            labels={"figure": "accuracy against samples/s"},
        ),
        svg=expand(
            "results/plots/{name}.svg",
            name=PLOT_NAMES,
        ),
    log:
        "results/logs/plots.log",
    localrule: True
    conda:
        "../../envs/conda.yaml"
    # the figures are drawn two at a time (llmhpc.stages.plots.make_all); nothing else is left to run by then
    threads: 2
    params:
        experiments=list(EXPERIMENTS),
        tolerance=config["presentation"]["accuracy_tolerance"],
    message:
        "Drawing the plots into results/plots/"
    script:
        "../scripts/plots.py"
