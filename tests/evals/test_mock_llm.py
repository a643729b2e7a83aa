"""The scripted OpenAI-compatible endpoint, driven by the real `openai` client over HTTP and over a transport."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from pipewarden.evals.mock_llm import (
    Delay,
    MockLLMServer,
    ScriptedLLM,
    answer,
    delay,
    http_error,
    mock_transport,
    refusal,
    text,
    tool_call,
)

MESSAGES = [{"role": "system", "content": "rules"}, {"role": "user", "content": "some data"}]
SCRIPT = [
    answer({"ok": True}),
    text("{not json"),
    refusal("no."),
    tool_call("lookup", {"q": "flights"}),
    http_error(503, "overloaded"),
]


def _client(kind: str, script: list, timeout: float = 2.0) -> tuple[openai.OpenAI, ScriptedLLM, Iterator]:
    if kind == "http":
        srv = MockLLMServer(script).start()
        client = openai.OpenAI(api_key="sk-test", base_url=srv.base_url, timeout=timeout, max_retries=0)
        return client, srv.llm, srv
    transport = mock_transport(script)
    client = openai.OpenAI(
        api_key="sk-test", base_url="http://mock.invalid/v1", timeout=timeout, max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    return client, transport.llm, None


@pytest.fixture(params=["http", "transport"])
def make(request: pytest.FixtureRequest) -> Iterator:
    servers: list[MockLLMServer] = []

    def _make(script: list, timeout: float = 2.0) -> tuple[openai.OpenAI, ScriptedLLM]:
        client, llm, srv = _client(request.param, script, timeout)
        if srv is not None:
            servers.append(srv)
        return client, llm

    yield _make
    for s in servers:
        s.stop()


def _ask(client: openai.OpenAI):
    return client.chat.completions.create(model="m1", messages=MESSAGES)


def test_each_step_kind_reaches_the_client(make) -> None:
    client, llm = make(SCRIPT)
    first = _ask(client)
    assert json.loads(first.choices[0].message.content) == {"ok": True}
    assert first.model == "m1" and first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens > 0 and first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert _ask(client).choices[0].message.content == "{not json"
    refused = _ask(client).choices[0].message
    assert refused.refusal == "no." and refused.content is None
    called = _ask(client).choices[0]
    assert called.finish_reason == "tool_calls"
    assert called.message.tool_calls[0].function.name == "lookup"
    assert json.loads(called.message.tool_calls[0].function.arguments) == {"q": "flights"}
    with pytest.raises(openai.InternalServerError, match="overloaded") as info:
        _ask(client)
    assert info.value.status_code == 503
    assert llm.remaining == 0


def test_requests_are_recorded(make) -> None:
    client, llm = make([answer({}), answer({})])
    _ask(client)
    client.chat.completions.create(model="m1", messages=[*MESSAGES, {"role": "user", "content": "feedback"}])
    first, second = llm.chat_requests
    assert first.system_prompt == "rules" and first.user_text == "some data"
    assert second.user_text == "some data\nfeedback"
    assert first.body["model"] == "m1" and first.headers["authorization"] == "***"


def test_exhausted_script_is_a_500(make) -> None:
    client, _ = make([])
    with pytest.raises(openai.InternalServerError, match="script exhausted"):
        _ask(client)


def test_models_listing_and_unknown_paths(make) -> None:
    client, llm = make([])
    assert [m.id for m in client.models.list()] == ["mock-model"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="e", input="x")
    assert [r.path for r in llm.requests] == ["/v1/models", "/v1/embeddings"]


def test_delay_shorter_than_the_timeout_answers(make) -> None:
    client, _ = make([delay(0.2, then=answer({"late": 1}))], timeout=2.0)
    t0 = time.monotonic()
    assert json.loads(_ask(client).choices[0].message.content) == {"late": 1}
    assert time.monotonic() - t0 >= 0.2


def test_delay_longer_than_the_timeout_times_out(make) -> None:
    client, _ = make([delay(5.0)], timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        _ask(client)
    assert time.monotonic() - t0 < 2.0


def test_steps_load_from_plain_dicts() -> None:
    llm = ScriptedLLM([{"kind": "delay", "seconds": 1, "then": {"kind": "text", "text": "x"}}, {"kind": "refusal"}])
    assert isinstance(llm.script[0], Delay) and llm.script[0].then == text("x")
    assert llm.script[1] == refusal()


def test_server_stops_promptly_with_a_request_in_flight() -> None:
    srv = MockLLMServer([delay(30.0)]).start()
    client = openai.OpenAI(api_key="k", base_url=srv.base_url, timeout=0.2, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        _ask(client)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 3.0
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.base_url


def test_a_running_server_serves_the_script_loaded_last_and_each_script_keeps_its_own_log() -> None:
    with MockLLMServer([answer({"first": 1})]) as srv:
        client = openai.OpenAI(api_key="sk-test", base_url=srv.base_url, timeout=2.0, max_retries=0)
        first = srv.llm
        assert json.loads(_ask(client).choices[0].message.content) == {"first": 1}
        second = srv.load([answer({"second": 2})])
        assert json.loads(_ask(client).choices[0].message.content) == {"second": 2}
        assert srv.llm is second and first.requests_seen == 1 and second.requests_seen == 1
        with pytest.raises(openai.InternalServerError, match="script exhausted"):
            _ask(client)
        assert first.requests_seen == 1 and second.requests_seen == 2
