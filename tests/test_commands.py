"""The commands the README and the configs' comments show cannot swallow a target: `--configfile A B target` and
`--forcerun X target` read the target as one more config file or rule (one such line made every job of a preset,
not the one file), so each command, with a target typed after it, must still make that target (as Snakemake 9's
own parser reads it)."""

import re

from conftest import REPO
from snakemake_words import snakemake_words, swallows_a_target


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    inline = re.findall(r"`(snakemake [^`]*)`", (REPO / "README.md").read_text())
    return [line for line in lines + inline if snakemake_words(line) is not None]


def test_readme_commands_keep_a_target_typed_after_them():
    commands = readme_commands()
    assert len(commands) >= 15, commands
    swallowing = [line for line in commands if swallows_a_target(line)]
    # the README's own warning shows the trap on purpose: it is the one line allowed to swallow
    assert swallowing == ["snakemake --forcerun evaluate results/evaluate/base/metrics.json"], swallowing


def test_the_probe_tells_the_safe_forms_from_the_traps():
    assert swallows_a_target("snakemake --configfile a.yaml b.yaml")
    assert swallows_a_target("snakemake --forcerun finetune   # redo")
    assert not swallows_a_target("snakemake --configfile a.yaml b.yaml --")
    assert not swallows_a_target("snakemake --forcerun=finetune --until=finetune")
    assert not swallows_a_target(". .venv/bin/activate && snakemake --profile gadi -n --configfile=my-run.yaml")


def config_commands() -> list[str]:
    """The `snakemake ...` lines in the comments of the shipped configs (each preset says how to run it)."""
    found = []
    for path in sorted((REPO / "config").rglob("*.yaml")):
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#") and "snakemake " in line:
                found.append("snakemake " + line.split("snakemake ", 1)[1])
    return found


def test_the_configs_commands_keep_a_target_typed_after_them():
    commands = config_commands()
    assert len(commands) >= 8, commands
    assert [line for line in commands if swallows_a_target(line)] == []
