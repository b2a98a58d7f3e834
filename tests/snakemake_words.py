"""Shared by the tests of the commands the project shows (README, the deck's reproduce slide): whether a target
typed after a command stays a target, as Snakemake 9's own argument parser reads the line."""

import shlex

PROBE = "results/PROBE-TARGET"


def snakemake_words(line: str) -> list[str] | None:
    """The words after `snakemake` of a shell line (a comment and what comes before `&& snakemake` dropped), or
    None where the line runs no snakemake."""
    line = line.split("  #")[0].strip()
    if " && snakemake" in line:
        line = "snakemake" + line.split(" && snakemake", 1)[1]
    if not line.startswith("snakemake"):
        return None
    return shlex.split(line)[1:]


def swallows_a_target(line: str) -> bool:
    """Whether a target typed at the end of the line would be read as the value of an option instead. A line that
    Snakemake refuses with the target added (a target after options that follow the targets) swallows nothing:
    it stops with an error."""
    import contextlib
    import io

    from snakemake.cli import get_argument_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = get_argument_parser().parse_args([*snakemake_words(line), PROBE])
    except SystemExit:
        return False
    return PROBE not in (args.targets or [])
