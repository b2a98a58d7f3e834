"""Checking a mapping against the workflow's JSON schema (the config, a profile's site file): every refusal names
the key (``finetune.micro_batch_size``, ``experiments[1].finetune.devices``), says what was expected and what was
found, with a did-you-mean for a misspelt key. Below llmhpc.config and llmhpc.cluster.site, which both check."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

try:
    import jsonschema_rs  # the fast verdict (below); its import takes ~5 ms where jsonschema's takes ~0.1 s
except ImportError:  # an environment without it validates with jsonschema alone: same verdicts, slower parse
    jsonschema_rs = None

if TYPE_CHECKING:
    import jsonschema


class ConfigError(ValueError):
    """The config cannot run; the message says which key and what to change."""


def key_path(parts) -> str:
    """('experiments', 1, 'finetune') -> 'experiments[1].finetune'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


# Names people type for a key whose spelling difflib does not find close: fp8 is the usual word for float8.
ALIASES = {"fp8": "float8"}


def _describe(error: jsonschema.ValidationError, prefix: tuple = ()) -> str:
    path = [*prefix, *error.absolute_path]
    where = key_path(path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        msgs = []
        for k in extra:
            full = key_path([*path, k])
            hint = difflib.get_close_matches(k, allowed, n=1) or [a for a in [ALIASES.get(k)] if a in allowed]
            did = f" (did you mean '{hint[0]}'?)" if hint else ""
            msgs.append(f"config key '{full}': unknown key{did}; expected one of: {', '.join(allowed)}")
        return "\n".join(msgs)
    if error.validator == "not" and error.instance == "base":
        return f"config key '{where}': 'base' is reserved for the base model; choose another experiment name"
    got = repr(error.instance)
    if error.validator == "enum":
        expected = "one of " + ", ".join(repr(v) for v in error.validator_value)
    elif error.validator == "type":
        expected = f"a value of type {error.validator_value}"
    elif error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        expected = f"a number {sign} {error.validator_value}"
    elif error.validator == "pattern":
        expected = f"a string matching {error.validator_value} (letters, digits, '_', '-')"
    elif error.validator == "required":
        return f"config key '{where}': {error.message}"
    elif error.validator == "minItems":
        expected = f"at least {error.validator_value} item(s)"
    else:
        expected = error.message
    return f"config key '{where}': expected {expected}, got {got}"


def fast_verdict(instance: Any, schema: dict) -> bool:
    """True when jsonschema-rs finds `instance` valid. Every Snakemake parse (each dry run, each cluster job) checks
    a config that is nearly always valid; this answers in Rust without importing jsonschema, whose bundled
    meta-schemas cost ~0.07 s of a 1.5 s parse. False (ask jsonschema) when it is missing, finds a problem, or cannot
    read a value (a YAML date, a mapping key that is not a string): jsonschema stays the judge of every
    refusal."""
    if jsonschema_rs is None:
        return False
    try:
        return jsonschema_rs.Draft202012Validator(schema).is_valid(instance)
    except (ValueError, TypeError, OverflowError):
        return False


def problems(instance: Any, schema: dict, prefix=()) -> list[str]:
    """A message per way `instance` breaks `schema`, each naming its key (under `prefix`); [] when valid."""
    if fast_verdict(instance, schema):
        return []
    import jsonschema  # only a config that may be refused pays for it: its errors name the key and the value

    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        messages.append(_describe(error, prefix))
    return messages
