from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.llm_server import LLMServer

#: A key planted in every SDK provider of these tests; it must never show up where people read.
PLANTED_KEY = "sk-ant-PLANTED-5ecret-0000-do-not-leak"


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    server = LLMServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["anthropic", "openai"])
def sdk_provider(request, llm_server):  # type: ignore[no-untyped-def]
    """Each SDK provider, pointed at the local server, with the planted key and a short timeout."""
    from processing.llm.providers.base import ProviderConfig, make_provider

    base_url = llm_server.url if request.param == "anthropic" else llm_server.url + "/v1"
    return make_provider(
        ProviderConfig(
            provider=request.param, api_key=PLANTED_KEY, base_url=base_url, timeout_ms=1_500, default_wait_ms=9_000
        )
    )
