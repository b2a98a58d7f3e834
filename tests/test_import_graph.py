"""The package's layers go one way: every import of a module under src/llmhpc (at the top, inside a function, under
TYPE_CHECKING: each is a dependency a reader follows) is read with `ast`, and the graph they make has no cycle and
no edge from a layer to one above it. Code that two packages share lives in a layer below both.

Workflow scripts (workflow/scripts, the rule files) stand above every layer: nothing here imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.unit

SRC = REPO / "src"
ROOT = "llmhpc"

# Lowest first. A module belongs to the entry that names it or the longest one that names a package above it (the
# root package's entry is its __init__ alone); it may import its own layer (the cycle check keeps that one way) and
# any below. A new top-level module has no layer until it is given one here.
LAYERS = [
    # What every package may use: settings holds the typed config sections, schema_check the JSON-schema refusals,
    # records the data files' reader; litgpt_core and litgpt_checkpoint load LitGPT and a checkpoint of it, bulk_copy
    # moves a checkpoint's tensors to a GPU, launchers reads what torchrun, srun or mpirun started, process_group
    # starts the group the fine-tune engine and the scorer run in, clock tells a job's age, cuda_start starts a GPU's
    # context beside a job's other start-up work, process_exit shortens a job's exit.
    ("base", [ROOT, "llmhpc.atomic", "llmhpc.settings", "llmhpc.schema_check", "llmhpc.records", "llmhpc.compiling",
              "llmhpc.interrupt", "llmhpc.profiling", "llmhpc.readahead", "llmhpc.rulelog", "llmhpc.litgpt_core",
              "llmhpc.litgpt_checkpoint", "llmhpc.bulk_copy", "llmhpc.launchers", "llmhpc.process_group",
              "llmhpc.clock", "llmhpc.cuda_start", "llmhpc.process_exit"]),
    # One package per concern, side by side (one may use another, never both ways): the site and its scheduler,
    # the training engines, the scorers, the server, the model and data sources.
    ("domain", ["llmhpc.cluster", "llmhpc.train", "llmhpc.eval", "llmhpc.serve", "llmhpc.sources"]),
    # The workflow config's check and what the Snakefile reads at parse time: they ask each domain package what it
    # accepts (its engines, scorers, site keys), so they sit above them.
    ("config", ["llmhpc.config", "llmhpc.litgpt_args", "llmhpc.snakefile_helpers"]),
    # What people look at: plots, slides, the submission bundle, and the summary table they read.
    ("outputs", ["llmhpc.outputs"]),
    # One module per workflow stage, called by the rule scripts.
    ("stages", ["llmhpc.stages"]),
]


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    found = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _known(name: str, known) -> str | None:
    """`name` or the nearest package above it that is a module here (`llmhpc.x.attr` -> `llmhpc.x`)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known) -> set[str]:
    """The modules of the package that `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out |= {_known(t, known) for t in targets if t == ROOT or t.startswith(ROOT + ".")}
    return out - {None, name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(name: str) -> int:
    best = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            under = entry != ROOT and name.startswith(entry + ".")
            if (name == entry or under) and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    if best is None:
        raise KeyError(f"{name} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import cycle lies in
    one of them."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _layer_or_none(name: str) -> int | None:
    try:
        return layer_of(name)
    except KeyError:
        return None


def test_every_module_has_a_layer():
    assert [name for name in modules() if _layer_or_none(name) is None] == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_module_imports_one_in_a_layer_above():
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})"
              for name, deps in sorted(graph().items()) for dep in sorted(deps) if layer_of(dep) > layer_of(name)]
    assert upward == []


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    """Top-level, function-level, `from pkg import module`, `from module import name` and relative imports."""
    pkg = tmp_path / "llmhpc"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py"):
        (pkg / name).write_text("")
    (pkg / "sub" / "d.py").write_text(
        "import llmhpc.a\nfrom llmhpc import b\nfrom . import c\nfrom .. import settings_not_here\n"
        "def f():\n    from llmhpc.sub.c import thing\n")
    known = {"llmhpc", "llmhpc.a", "llmhpc.b", "llmhpc.sub", "llmhpc.sub.c", "llmhpc.sub.d"}
    assert imports_of("llmhpc.sub.d", pkg / "sub" / "d.py", known) == {"llmhpc", "llmhpc.a", "llmhpc.b",
                                                                       "llmhpc.sub.c"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("llmhpc.cluster.pbs") == 1 and layer_of("llmhpc.litgpt_checkpoint") == 0
    with pytest.raises(KeyError, match="llmhpc.new_module is in no layer"):
        layer_of("llmhpc.new_module")
