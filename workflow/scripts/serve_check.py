from pathlib import Path

from llmhpc.rulelog import to_log
from llmhpc.stages import serve_check

to_log(snakemake.log.log)
settings = dict(snakemake.params.settings)
settings["threads"] = settings.get("threads") or snakemake.threads
serve_check.run(Path(snakemake.input.checkpoint), Path(snakemake.input.eval), settings,
                Path(snakemake.output.metrics), Path(snakemake.log.server))
