"""Schemathesis against the live server's OpenAPI document: no 5xx, responses as documented.

Every operation gets 50 generated requests (valid ones, then invalid ones), deterministic
(``derandomize``), sent with an admin token to the real server. (Schemathesis' lazy pytest
loader does not work with this pytest, so the operations are driven from one test.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.conftest import Api

EXAMPLES = 50
# The query's SQL is free text: a request can fit the schema and still be refused (400: bad SQL,
# a statement the sandbox refuses). Every other check, 5xx included, applies to it.
FREE_TEXT = {"POST /api/v1/query"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_conforms_to_its_openapi(api: Api, mode: GenerationMode) -> None:
    headers = {"Authorization": f"Bearer {api.tokens['admin']}"}
    schema = schemathesis.openapi.from_url(f"{api.url}/api/v1/openapi.json", headers=headers, timeout=30)
    failures: dict[str, str] = {}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # The token is fixed rather than generated: invalid data is tried everywhere else.
        strategy = operation.as_strategy(generation_mode=mode, headers=headers)

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            excluded = [positive_data_acceptance] if case.operation.label in FREE_TEXT else []
            case.call_and_validate(timeout=60, excluded_checks=excluded)

        try:
            check()
        except Unsatisfiable:
            if mode == GenerationMode.NEGATIVE:
                continue  # nothing in this operation can be made invalid (only the fixed token)
            raise
        except Exception as exc:  # report every operation's failure, not only the first
            failures[operation.label] = str(exc)[:3000]
        tested.append(operation.label)
    assert len(tested) >= (10 if mode == GenerationMode.POSITIVE else 5), tested
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
