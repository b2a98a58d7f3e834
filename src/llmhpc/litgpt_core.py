"""LitGPT's config, model and tokenizer in a process that runs the model only, without Lightning.

`import litgpt` runs litgpt/__init__.py, which imports litgpt.api and with it Lightning, whose import of
torchmetrics imports transformers and scipy: most of a small job's start-up on a cluster node. The fast scorer
and the server need three of LitGPT's modules (config.py, model.py, tokenizer.py), and those reach Lightning
through two names only: model.py's `qkv_reassemble` (a hook for an old checkpoint layout) and tokenizer.py's
`fix_and_load_json` (for a malformed tokenizer_config.json). `load()` registers the litgpt package without running
its __init__, imports the three modules with those two names bound to functions that import their real module
on first call, and leaves the rest of LitGPT as it was: the package's other names (LLM, PromptStyle, ...) load
its __init__ on first use (a module __getattr__, PEP 562), and `import litgpt.utils` gets the real module.
Every line that runs is LitGPT's own; only the order of its imports changes.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import types

CORE = ("litgpt.config", "litgpt.model", "litgpt.tokenizer")
# what the core modules import from modules that import Lightning, resolved on first call
DEFERRED = {"litgpt.scripts.convert_hf_checkpoint": "qkv_reassemble", "litgpt.utils": "fix_and_load_json"}
HEAVY = ("lightning", "torchmetrics", "transformers")


def config_class():
    """LitGPT's Config alone: litgpt/config.py imports neither torch nor Lightning, so a job that only reads
    architectures (the weights stage's tiny source) starts in a fraction of a second."""
    package = _package()
    if package is None:  # litgpt's __init__ ran already
        from litgpt import Config

        return Config
    return importlib.import_module("litgpt.config").Config


def _package():
    """The litgpt package registered without running its __init__ (once), or None where the __init__ ran."""
    package = sys.modules.get("litgpt")
    if package is not None:
        return package if package.__dict__.get("_llmhpc_core") and not package.__dict__.get("_llmhpc_init_ran") else None
    spec = importlib.util.find_spec("litgpt")
    package = importlib.util.module_from_spec(spec)
    package.__getattr__ = functools.partial(_rest_of_package, package, spec)
    package._llmhpc_core = True
    sys.modules["litgpt"] = package
    return package


def load() -> None:
    """Make `from litgpt import Config, GPT, Tokenizer` and `litgpt.model` work without importing Lightning.
    Does nothing where litgpt's __init__ ran already (nothing is left to save) or where load() ran before."""
    fresh = "litgpt" not in sys.modules
    package = _package()
    if package is None or "GPT" in package.__dict__:
        return
    stand_ins = {name: _stand_in(name, attr) for name, attr in DEFERRED.items()}
    sys.modules.update(stand_ins)
    try:
        for name in CORE:
            importlib.import_module(name)
    except BaseException:
        if fresh:
            sys.modules.pop("litgpt", None)
        raise
    finally:
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    package.Config = sys.modules["litgpt.config"].Config
    package.GPT = sys.modules["litgpt.model"].GPT
    package.Tokenizer = sys.modules["litgpt.tokenizer"].Tokenizer


def _stand_in(module: str, attr: str) -> types.ModuleType:
    stand_in = types.ModuleType(module)

    def deferred(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    deferred.__name__ = deferred.__qualname__ = attr
    setattr(stand_in, attr, deferred)
    return stand_in


def _rest_of_package(package: types.ModuleType, spec, name: str):
    """A name of litgpt/__init__.py not loaded yet: run the __init__ once (it imports Lightning), then answer."""
    if name.startswith("__") or package.__dict__.get("_llmhpc_init_ran"):
        raise AttributeError(f"module 'litgpt' has no attribute {name!r}")
    package._llmhpc_init_ran = True
    spec.loader.exec_module(package)
    return getattr(package, name)


_PATCH = threading.Lock()


def meta_gpt(config):
    """LitGPT's GPT(config) on the meta device, for weights that come from a checkpoint next, built without the
    two things that would only write to meta tensors: torch.nn.init's initializers and the RoPE cache (its
    buffers `cos` and `sin` are left empty; the caller computes them on the real device, as it already must).
    On meta tensors both run torch's Python reference ops, whose first call imports torch._dynamo: 1.5-4 s of a
    fresh process that then runs the model eager (a small evaluate job, the server). Another thread that builds
    modules meanwhile gets them uninitialised; the scorer's compile warm-up does, on a stand-in block whose
    values it never reads."""
    import torch

    load()
    from litgpt import GPT

    init = torch.nn.init
    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    with _PATCH:
        saved = {n: getattr(init, n) for n in names}
        rope_cache = GPT.rope_cache
        for n in names:
            setattr(init, n, _unchanged)
        GPT.rope_cache = _empty_rope
        try:
            with torch.device("meta"):
                return GPT(config)
        finally:
            GPT.rope_cache = rope_cache
            for n, f in saved.items():
                setattr(init, n, f)


def _unchanged(tensor, *args, **kwargs):
    return tensor


def _empty_rope(self, device=None):
    import torch

    return torch.empty(0, device=device), torch.empty(0, device=device)


def heavy_modules() -> list[str]:
    """Which of Lightning, torchmetrics and transformers this process has imported."""
    return [name for name in HEAVY if name in sys.modules]
