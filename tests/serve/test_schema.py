"""HELM's request bodies as the server reads them (pydantic only, no model): HELM's Python-side names are read as the
wire names they mean, and every misnamed or unknown field is named in the request's warnings, never dropped silently."""

from __future__ import annotations

from llmhpc.serve.schema import DecodeRequest, ProcessRequest, TokenizeRequest


def test_helm_python_side_names_are_read_as_the_wire_names_with_a_warning():
    body = ProcessRequest.model_validate({"prompt": "hi", "max_tokens": 5, "num_completions": 3})
    assert body.max_new_tokens == 5 and body.n == 3
    assert body.warnings == ["field 'max_tokens' read as 'max_new_tokens' (HELM's Python-side name; send 'max_new_tokens')",
                             "field 'num_completions' read as 'num_return_sequences' (HELM's Python-side name; send"
                             " 'num_return_sequences')"]


def test_the_wire_name_wins_over_its_alias_and_says_so():
    body = ProcessRequest.model_validate({"prompt": "hi", "max_new_tokens": 7, "max_tokens": 5})
    assert body.max_new_tokens == 7
    assert body.warnings == ["field 'max_tokens' ignored: 'max_new_tokens' is given too (the name this server reads)"]


def test_unknown_fields_are_named_with_a_did_you_mean():
    body = ProcessRequest.model_validate({"prompt": "hi", "temprature": 0.5, "presence_penalty": 0})
    assert body.temperature == 0.8  # the default: the misspelt field is not read
    assert body.warnings == ["unknown field 'temprature' ignored (did you mean 'temperature'?)",
                             "unknown field 'presence_penalty' ignored"]
    assert TokenizeRequest.model_validate({"text": "a", "max_len": 3}).warnings == [
        "unknown field 'max_len' ignored (did you mean 'max_length'?)"]
    assert DecodeRequest.model_validate({"tokens": [1], "decode_kwargs": {}}).warnings == []


def test_the_bodies_helm_and_the_sample_client_send_have_no_warnings():
    from helm_bodies import HELM_PROCESS, SAMPLE_PROCESS

    assert ProcessRequest.model_validate(HELM_PROCESS).warnings == []
    assert ProcessRequest.model_validate(SAMPLE_PROCESS).warnings == []
