"""Property test of the HTTP API against its own OpenAPI schema (schemathesis, bounded).

Every generated request, valid or not, must get no 5xx and an answer that matches the schema
(status code documented, content type, body shape). CI runs 20 fixed examples per operation;
``MYCELIUM_FUZZ_EXAMPLES=N`` runs N random ones instead (a longer search, on demand).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bootstrap.app import create_app
from mycelium_p2p.registry_api import CreateGroupBody, RegisterBody

_tmp = tempfile.TemporaryDirectory(prefix="mycelium-fuzz-")
app = create_app(Path(_tmp.name) / "fuzz.db", rng=random.Random(0), expiry=False)
store = app.state["store"]
# The ASGI client used by schemathesis does not run the lifespan: open the database here, and
# seed a few rows so that generated requests also reach the found-id paths.
store.open()
for _i in range(3):
    store.register(RegisterBody(id=f"n{_i}", name=f"n{_i}", gossip_address="h:1", model="m"))
store.create_group(CreateGroupBody(name="g", leader="n0", flower_address="h:2", model="m", id="g0"))

schema = schemathesis.openapi.from_asgi("/docs/openapi.json", app)

ON_DEMAND = os.environ.get("MYCELIUM_FUZZ_EXAMPLES")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=int(ON_DEMAND or 20),
    deadline=None,
    derandomize=not ON_DEMAND,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
