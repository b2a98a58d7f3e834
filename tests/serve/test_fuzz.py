"""Property-based fuzz of the server's OpenAPI schema (schemathesis's strategies, run by hypothesis): bodies that
fit the schema and bodies that break it, on every endpoint; none may get a 5xx, and 200 answers match the schema.
(schemathesis's own pytest plugin is not used: it relies on pytest internals that pytest 9 no longer has.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.litgpt
EXAMPLES = 40  # per endpoint and mode: 2 x 40 x 4 endpoints


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_body_gets_a_5xx(app, mode):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/process", "/tokenize", "/decode"}
    statuses = []
    for op in operations:
        if mode == GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # GET /health takes nothing that could be wrong
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call()
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.path} {case.body!r}: {response.status_code} {response.text}"
            if response.status_code == 200:
                case.validate_response(response)

        check()
    assert 200 in statuses if mode == GenerationMode.POSITIVE else any(400 <= s < 500 for s in statuses)
