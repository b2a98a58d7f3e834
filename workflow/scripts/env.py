import subprocess
import sys
from pathlib import Path

from llmhpc.rulelog import to_log
from llmhpc.stages import env as envinfo
from llmhpc.stages.finetune import write_json

to_log(snakemake.log[0])
env = snakemake.params.env
requirements = Path(snakemake.input.requirements)
if env["mode"] == "build":
    # The cluster path: a venv from the site's modules plus the pinned requirements (envs/build_venv.sh).
    cmd = ["bash", snakemake.input.build_script, env["venv"], str(requirements), *env["modules"]]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=sys.stdout)
    probe = subprocess.run([f"{env['venv']}/bin/python", "-m", "llmhpc.stages.env", str(requirements)],
                           capture_output=True, text=True)
    print(probe.stdout, probe.stderr)
    if probe.returncode:
        raise SystemExit(f"the venv at {env['venv']} does not match {requirements}")
problems = envinfo.verify(requirements)
if problems:
    raise SystemExit("environment does not match the pins:\n  " + "\n  ".join(problems)
                     + f"\nInstall them with: pip install -r {requirements}")
manifest = envinfo.manifest(requirements, Path.cwd())
write_json(snakemake.output.manifest, manifest)
print(f"python {manifest['python']} torch {manifest['torch']} litgpt {manifest['litgpt']}"
      f" cuda {manifest['cuda']} gpus {len(manifest['gpus'])} commit {manifest['git_commit']}")
