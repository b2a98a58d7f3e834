"""HELM's request and response bodies (helm/clients/http_model_client.py, helm/tokenizers/http_model_tokenizer.py,
and the NeurIPS 2023 challenge's sample server). Every field HELM sends is honoured; fields this server does not
know are ignored, as HELM expects. Bounds that depend on the model (prompt length, token ids) are checked by the
app against the loaded checkpoint, with a 4xx saying what to change.

A field the body does not define is not silently dropped: HELM's Python-side names (`max_tokens`,
`num_completions`, what helm.common.request.Request calls them) are read as their wire names, and every such
alias or unknown field is named in the answer's `warnings` (and the server's log), with a did-you-mean."""

from __future__ import annotations

import difflib
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

MAX_RETURN_SEQUENCES = 64
MAX_TOP_K_PER_TOKEN = 100
MAX_STOP_SEQUENCES = 64


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode text (a lone surrogate at {err.start})") from None
    return text


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, strict=True)  # no "5" for 5, no false for 0
    ALIASES: ClassVar[dict[str, str]] = {}  # another name a client may send: the field it means
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _note_names(cls, data, handler):
        """Read ALIASES as their fields and note them, and note the fields this body does not define (still
        ignored: HELM sends fields a server may not know), so the answer can say what was not understood."""
        notes = []
        if isinstance(data, dict):
            data = dict(data)
            for alias, name in cls.ALIASES.items():
                if alias not in data:
                    continue
                value = data.pop(alias)
                if name in data:
                    notes.append(f"field '{alias}' ignored: '{name}' is given too (the name this server reads)")
                else:
                    data[name] = value
                    notes.append(f"field '{alias}' read as '{name}' (HELM's Python-side name; send '{name}')")
            known = [*cls.model_fields, *cls.ALIASES]
            for key in (k for k in data if k not in cls.model_fields):
                hint = difflib.get_close_matches(str(key), known, n=1)
                did = f" (did you mean '{hint[0]}'?)" if hint else ""
                notes.append(f"unknown field '{key}' ignored{did}")
        model = handler(data)
        model._warnings = notes
        return model

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)


class ProcessRequest(_Body):
    ALIASES: ClassVar[dict[str, str]] = {"max_tokens": "max_new_tokens", "num_completions": "num_return_sequences"}

    prompt: str = Field(description="The text to continue.")
    num_samples: int | None = Field(None, ge=1, le=MAX_RETURN_SEQUENCES,
                                    description="The challenge sample's name for num_return_sequences.")
    num_return_sequences: int | None = Field(None, ge=1, le=MAX_RETURN_SEQUENCES,
                                             description="Completions to return (HELM's num_completions); default 1.")
    max_new_tokens: int = Field(50, ge=0, description="Tokens to generate; 0 scores the prompt only (with echo_prompt).")
    temperature: float = Field(0.8, ge=0.0, le=100.0, description="Below 1e-5 (HELM sends 1e-7 for 0): greedy.")
    top_k: int | None = Field(200, ge=0, description="Sample among the k most likely tokens (0 or null: all).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: the smallest set reaching this probability.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Seeds each sequence's sampling (completion i: seed + i).")
    echo_prompt: bool = Field(False, description="Return the prompt's tokens (with log-probabilities) before the new ones.")
    top_k_per_token: int = Field(1, ge=1, le=MAX_TOP_K_PER_TOKEN,
                                 description="Alternatives (token text: log-probability) answered per token.")
    stop_sequences: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES,
                                      description="Generation ends at the first of these; it is cut from text and tokens.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _encodable(v)

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str]) -> list[str]:
        return [_encodable(s) for s in v]

    @property
    def n(self) -> int:
        return self.num_return_sequences or self.num_samples or 1


class Token(BaseModel):
    text: str
    logprob: float
    top_logprob: dict[str, float]


class Completion(BaseModel):
    text: str
    tokens: list[Token]
    logprob: float


class ProcessResponse(Completion):
    """The first completion at the top level (what HELM reads), every completion in `completions`."""
    completions: list[Completion]
    request_time: float
    warnings: list[str] = Field(default_factory=list,
                                description="Fields of the request that were misnamed or unknown, and what was done.")


class TokenizeRequest(_Body):
    text: str
    truncation: bool = True
    max_length: int = Field(2048, ge=1)

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return _encodable(v)


class TokenizeResponse(BaseModel):
    tokens: list[int]
    request_time: float
    warnings: list[str] = Field(default_factory=list,
                                description="Fields of the request that were misnamed or unknown, and what was done.")


class DecodeRequest(_Body):
    tokens: list[int]
    decode_kwargs: dict = Field(default_factory=dict, description="Accepted and ignored (the sample server's field).")


class DecodeResponse(BaseModel):
    text: str
    request_time: float
    warnings: list[str] = Field(default_factory=list,
                                description="Fields of the request that were misnamed or unknown, and what was done.")
