"""httpx2 (the httpx fork openai >= 3, anthropic >= 2 and Starlette's TestClient use):
deps.http.mock's routes answer it as they answer httpx, with httpx2's own responses and
errors, streamed; the real SDKs run on routes offline; cassettes record and replay it."""

from __future__ import annotations

import pytest

from tests.test_cassettes import HOST, RESOLVER, remote  # noqa: F401 - the fixture

pytest.importorskip("httpx2")

ROUTES = """
import asyncio
import httpx, httpx2, pytest

API = "https://api.example.com"

@pytest.mark.deps("http", assert_all_called=True)
def test_routes_answer_httpx2_sync_and_async(deps):
    route = deps.http.mock.get(f"{API}/rates").respond(json={"USD": 1.1})
    response = httpx2.get(f"{API}/rates")
    assert type(response) is httpx2.Response
    assert response.json() == {"USD": 1.1}

    async def go():
        async with httpx2.AsyncClient() as client:
            return (await client.get(f"{API}/rates")).json()

    assert asyncio.run(go()) == {"USD": 1.1}
    assert route.call_count == 2
    assert route.calls.last.request.url == httpx2.URL(f"{API}/rates")  # httpx2's own
    assert deps.http.mock.calls[0].request.url == httpx2.URL(f"{API}/rates")

@pytest.mark.deps("http")
def test_httpx_and_httpx2_in_one_test(deps):
    deps.http.mock.get(f"{API}/both").respond(204)
    assert httpx.get(f"{API}/both").status_code == 204
    assert httpx2.get(f"{API}/both").status_code == 204

@pytest.mark.deps("http")
def test_httpx2_responses_and_errors_in_routes(deps):
    deps.http.mock.get(f"{API}/value").mock(return_value=httpx2.Response(201, json=[1]))
    deps.http.mock.get(f"{API}/echo").mock(
        side_effect=lambda request: httpx2.Response(200, content=request.url.query))
    deps.http.mock.get(f"{API}/flaky").mock(
        side_effect=[httpx2.ConnectTimeout, httpx2.Response(200, text="again")])
    deps.http.mock.get(f"{API}/down").mock(side_effect=httpx.ConnectError)
    assert httpx2.get(f"{API}/value").json() == [1]
    assert httpx2.get(f"{API}/echo?q=1").text == "q=1"
    with pytest.raises(httpx2.ConnectTimeout):
        httpx2.get(f"{API}/flaky")
    assert httpx2.get(f"{API}/flaky").text == "again"
    with pytest.raises(httpx2.ConnectError):  # httpx's error, raised as httpx2's
        httpx2.get(f"{API}/down")

@pytest.mark.deps("http")
def test_streamed_server_sent_events(deps):
    events = [b'data: {"n": 1}\\n\\n', b"event: ping\\ndata: two\\n\\n"]
    deps.http.mock.get(f"{API}/events").respond(
        headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(b"".join(events)))
    with httpx2.Client() as client, client.stream("GET", f"{API}/events") as response:
        assert list(response.iter_lines()) == ['data: {"n": 1}', "", "event: ping",
                                               "data: two", ""]

@pytest.mark.deps("http")
def test_an_unmatched_httpx2_request_names_the_fix(deps):
    with pytest.raises(AssertionError, match="GET https://api.example.com/nope matched no "
                       "route of deps.http.mock. Stub it"):
        httpx2.get(f"{API}/nope")

@pytest.mark.deps("http", assert_all_called=True)
def test_assert_all_called_sees_httpx2_calls(deps):
    deps.http.mock.get(f"{API}/called").respond(200)
    deps.http.mock.get(f"{API}/never").respond(200)
    httpx2.get(f"{API}/called")
"""


def test_routes_answer_httpx2(project, pytester):
    project(ROUTES, name="test_routes")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5, failed=1)  # the route never called
    result.stdout.fnmatch_lines(["*1 route(s) of deps.http.mock never called*",
                                 "*never*"])


SDKS = """
import json
import anthropic, httpx2, openai, pytest

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
              "choices": [{"index": 0, "finish_reason": "stop",
                           "message": {"role": "assistant", "content": "hello"}}]}

def chunk(text):
    return ("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk",
            "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
            + "\\n\\n").encode()

@pytest.mark.deps("http")
def test_openai_chat_completion(deps):
    route = deps.http.mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=COMPLETION)
    client = openai.OpenAI(api_key="sk-test", max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o",
                                            messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello"
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-test"

@pytest.mark.deps("http")
def test_openai_streamed_completion(deps):
    body = chunk("hel") + chunk("lo") + b"data: [DONE]\\n\\n"
    deps.http.mock.post("https://api.openai.com/v1/chat/completions").respond(
        headers={"content-type": "text/event-stream"}, content=body)
    client = openai.OpenAI(api_key="sk-test", max_retries=0)
    stream = client.chat.completions.create(model="gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert [c.choices[0].delta.content for c in stream] == ["hel", "lo"]

@pytest.mark.deps("http")
def test_openai_retries_an_error_status(deps):
    route = deps.http.mock.post("https://api.openai.com/v1/chat/completions").mock(
        side_effect=[httpx2.Response(429, headers={"retry-after-ms": "1"},
                                     json={"error": {"message": "slow down"}}),
                     httpx2.Response(200, json=COMPLETION)])
    client = openai.OpenAI(api_key="sk-test", max_retries=1)
    answer = client.chat.completions.create(model="gpt-4o",
                                            messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello"
    assert route.call_count == 2
    deps.http.mock.post("https://api.openai.com/v1/embeddings").respond(
        429, json={"error": {"message": "slow down"}})
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(api_key="sk-test", max_retries=0).embeddings.create(
            model="text-embedding-3-small", input="hi")

@pytest.mark.deps("http")
async def test_openai_async(deps):
    deps.http.mock.post("https://api.openai.com/v1/chat/completions").respond(
        json=COMPLETION)
    client = openai.AsyncOpenAI(api_key="sk-test", max_retries=0)
    answer = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello"

MESSAGE = {"id": "m1", "type": "message", "role": "assistant", "model": "claude-x",
           "content": [{"type": "text", "text": "hi there"}], "stop_reason": "end_turn",
           "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 2}}

def event(kind, data):
    return f"event: {kind}\\ndata: {json.dumps({'type': kind, **data})}\\n\\n".encode()

@pytest.mark.deps("http")
def test_anthropic_messages_and_streaming(deps):
    client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
    deps.http.mock.post("https://api.anthropic.com/v1/messages").mock(side_effect=[
        httpx2.Response(200, json=MESSAGE),
        httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join([
            event("message_start", {"message": {**MESSAGE, "content": []}}),
            event("content_block_start", {"index": 0,
                                          "content_block": {"type": "text", "text": ""}}),
            event("content_block_delta", {"index": 0,
                                          "delta": {"type": "text_delta", "text": "hi "}}),
            event("content_block_delta", {"index": 0,
                                          "delta": {"type": "text_delta", "text": "there"}}),
            event("content_block_stop", {"index": 0}),
            event("message_delta", {"delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 2}}),
            event("message_stop", {}),
        ])),
    ])
    kwargs = {"model": "claude-x", "max_tokens": 10,
              "messages": [{"role": "user", "content": "hi"}]}
    assert client.messages.create(**kwargs).content[0].text == "hi there"
    with client.messages.stream(**kwargs) as stream:
        assert "".join(stream.text_stream) == "hi there"

@pytest.mark.deps("http")
def test_anthropic_timeout_is_a_timeout(deps):
    deps.http.mock.post("https://api.anthropic.com/v1/messages").mock(
        side_effect=httpx2.ReadTimeout)
    client = anthropic.Anthropic(api_key="sk-ant-test", max_retries=0)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model="claude-x", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
"""


def test_the_openai_and_anthropic_sdks_run_on_routes_offline(project, pytester):
    pytest.importorskip("openai")
    pytest.importorskip("anthropic")
    project(SDKS, ini="asyncio_mode = auto\n" if _has("pytest_asyncio") else None,
            conftest=None if _has("pytest_asyncio") else ANYIO, name="test_sdks")
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=6)


ANYIO = """
import pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if "async" in item.name:
            item.add_marker(pytest.mark.anyio)

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


APP = """
import os
import httpx2, pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

UPSTREAM = os.environ.get("UPSTREAM", "https://rates.example.com")
app = FastAPI()

@app.get("/price")
def price():
    rate = httpx2.get(f"{UPSTREAM}/rates").json()["USD"]
    return {"usd": round(10 * rate, 2)}

@pytest.mark.deps("http")
def test_price_with_a_route(deps):
    deps.http.mock.get(f"{UPSTREAM}/rates").respond(json={"USD": 1.1})
    assert TestClient(app).get("/price").json() == {"usd": 11.0}

@pytest.mark.deps("http", cassette="rates")
def test_price_from_a_cassette(deps):
    assert TestClient(app).get("/price").json()["usd"] > 0
"""


def test_a_fastapi_app_calling_upstream_with_httpx2(project, pytester, remote,  # noqa: F811
                                                    monkeypatch):
    """Through Starlette's TestClient (itself on httpx2): routes answer the handler's
    upstream call; a cassette records it from the real upstream, then replays it."""
    pytest.importorskip("fastapi")
    monkeypatch.setenv("UPSTREAM", f"http://{HOST}:{remote.server_address[1]}")
    project(APP.replace('["USD"]', '.get("USD", 1.5)'), conftest=RESOLVER, name="test_app")
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=2)
    cassette = pytester.path / "cassettes" / "rates.yaml"
    assert f"http://{HOST}" in cassette.read_text()  # the handler's call, recorded
    remote.shutdown()
    remote.server_close()
    replayed = pytester.runpytest_subprocess("-p", "no:randomly")
    replayed.assert_outcomes(passed=2)


def test_cassettes_record_and_replay_httpx2(project, pytester, remote, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    project("""
        import asyncio, os, httpx2, pytest

        BASE = os.environ["REMOTE_BASE"]

        @pytest.mark.deps("http")
        def test_both():
            assert httpx2.get(BASE + "/sync?api_key=SECRET-1").json()["path"] == "/sync"
            async def go():
                async with httpx2.AsyncClient() as client:
                    return (await client.get(BASE + "/async")).json()["path"]
            assert asyncio.run(go()) == "/async"
    """, conftest=RESOLVER, name="test_h2")
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    cassette = pytester.path / "cassettes" / "test_h2" / "test_both.yaml"
    text = cassette.read_text()
    assert "/sync?api_key=DEPFAKES-SCRUBBED" in text
    assert "SECRET-1" not in text
    assert "tok-RESPONSE-SECRET" not in text  # the response, scrubbed as httpx's are
    remote.shutdown()
    remote.server_close()
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert cassette.read_text() == text
