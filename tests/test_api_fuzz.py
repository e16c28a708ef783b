"""Fuzz every API route from its published OpenAPI description (schemathesis): whatever a client sends (data that
fits the description, and data that does not), the studio answers without a server error, and the answer (status,
media type, headers, body) is one the description lists.

The studio is the real one (services, queue and worker on the tiny test models) with limits so tight that any
request the fuzzer gets accepted is a one- or two-step 64x64 job, so the run stays within minutes on two cores.
The event stream is left out: for a job that exists it streams until the job ends, and the fuzzer cannot name one.
"""

from __future__ import annotations

import itertools
import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES_PER_ROUTE = 25  # per route and per kind of data: minutes at most on two cores


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory, tiny_model_store, one_thread):
    from app.api import create_api
    from modules.image.request import Limits
    from modules.runtime.config import AppConfig
    from modules.runtime.services import build_services

    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(tiny_model_store, root / "models")
    limits = Limits(max_pixels=64 * 64, max_side=64, max_steps=2, max_batch_size=1, max_batch_count=1,
                    max_upscale_pixels=128 * 128, max_upscale_side=128, max_upscale_inputs=2)
    config = AppConfig(models_dir=root / "models", outdir=root / "outputs", data_dir=root / "data",
                       default_ckpt="tiny-sd1", preview_interval=0, limits=limits)
    services = build_services(config)
    services.start()
    yield create_api(services)
    services.stop()


def test_every_route_answers_what_its_description_says(fuzzed_app):
    """Each operation gets its own bounded hypothesis run (the schemathesis pytest plugin's lazy fixture mode does
    not run on this pytest); every failing operation is reported, not only the first."""
    from hypothesis import given

    api = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    failures = []
    tried = 0
    operations = [result.ok() for result in api.get_all_operations()]
    for operation, mode in itertools.product(operations, GenerationMode):
        if operation.path.endswith("/events"):
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)
        def fuzz(case):
            case.call_and_validate(checks=CHECKS, headers={"Host": "localhost"})

        tried += 1
        try:
            fuzz()
        except Unsatisfiable:  # negative data for a route that takes no input: there is none to make
            continue
        except Exception as error:  # collect: one report for every operation that fails
            failures.append(f"{operation.label} ({mode} data): {error}")
    assert tried > 60
    assert not failures, "\n\n".join(failures)
