import json
from pathlib import Path

import yaml

from llmhpc import bundle
from llmhpc.config import canonical
from llmhpc.rulelog import to_log

to_log(snakemake.log[0])
params = snakemake.params
git_commit = json.loads(Path(snakemake.input.manifest).read_text()).get("git_commit") or "unknown"
files = bundle.layout(params.experiments, configfiles=params.configfiles)
dirs = bundle.runtime_dirs("results")
exclude = [snakemake.log[0], *params.exclude]  # this job's own log is still being written
try:
    members = bundle.collect(files, dirs, exclude=exclude, generated={
        "configs/config.effective.yaml": yaml.safe_dump(canonical(snakemake.config)).encode()})
    readme = bundle.readme_text(name=params.name, run_name=params.run_name, git_commit=git_commit,
                                experiments=params.experiments, max_file_mb=params.max_file_mb,
                                arcnames=[m.arcname for m in members])
    members.append(bundle.Member("README.txt", data=readme.encode()))
    summary = bundle.build(members, snakemake.output.archive, params.max_file_mb)
except bundle.BundleError as exc:
    raise SystemExit(str(exc)) from None
Path(snakemake.output.checksum).write_text(summary.sha256_line())
for arcname in sorted(m.arcname for m in members):
    print("  ", arcname)
