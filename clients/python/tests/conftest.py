"""The cluster under test: TIDAL_ENDPOINTS (and TIDAL_TOKEN, TIDAL_TLS_DIR when
it runs tokens and TLS), set by crates/tidal-cli/tests/it/python_client.rs,
which starts three servers and an agent that runs t2i tasks."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tidal  # noqa: E402


@pytest.fixture
def client():
    if not os.environ.get("TIDAL_ENDPOINTS"):
        pytest.fail("TIDAL_ENDPOINTS is not set: run these tests through `cargo nextest run -p tidal-cli python_client`, "
                    "or point TIDAL_ENDPOINTS (TIDAL_TOKEN, TIDAL_TLS_DIR) at a cluster with an agent of t2i tasks")
    with tidal.Client.from_env() as c:
        yield c
