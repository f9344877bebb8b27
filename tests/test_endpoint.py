"""ChatClient against a real HTTP server on loopback: replies, images, retries, failures."""

from __future__ import annotations

import base64
import time

import pytest
from pydantic import ValidationError

from advbench.models.endpoint import ChatClient, EndpointConfig, EndpointError
from tests.conftest import LoopbackServer


def reply(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class FakeServer(LoopbackServer):
    """Answers each POST with the next scripted step: (status, body) or ("sleep", seconds)."""

    def respond(self, request: dict) -> tuple[int, object]:
        step = self.next_step(default=(200, reply("default")))
        if step[0] == "sleep":
            time.sleep(step[1])
            step = (200, reply("too late"))
        return step

    def client(self, **overrides: object) -> ChatClient:
        config = {"url": self.url, "model": "test-model", "backoff_s": 0.001, "retries": 2,
                  "timeout_s": 5, **overrides}
        return ChatClient(EndpointConfig(**config))


@pytest.fixture
def server(loopback) -> FakeServer:
    return loopback(FakeServer)


USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def test_normal_reply_returns_content_and_sends_openai_body(server: FakeServer):
    server.steps = [(200, reply("hi there"))]
    with server.client(max_tokens=64, temperature=0.3) as client:
        assert client.complete(USER) == "hi there"
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["body"] == {"model": "test-model", "messages": USER, "temperature": 0.3,
                           "max_tokens": 64}


def test_content_as_list_of_text_parts_is_joined(server: FakeServer):
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    server.steps = [(200, {"choices": [{"message": {"content": parts}}]})]
    assert server.client().complete(USER) == "ab"


def test_images_go_into_last_user_message_as_png_data_urls(server: FakeServer):
    images = [b"\x89PNG fake one", b"\x89PNG fake two"]
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "describe"}]
    server.client().complete(messages, images=images)
    sent = server.requests[0]["body"]["messages"]
    assert sent[0] == {"role": "user", "content": "first"}
    text, *image_parts = sent[2]["content"]
    assert text == {"type": "text", "text": "describe"}
    urls = [p["image_url"]["url"] for p in image_parts]
    assert [p["type"] for p in image_parts] == ["image_url", "image_url"]
    prefix = "data:image/png;base64,"
    assert all(u.startswith(prefix) for u in urls)
    assert [base64.b64decode(u[len(prefix):]) for u in urls] == images
    assert messages[2]["content"] == "describe"  # the caller's messages are not changed


def test_api_key_is_read_from_the_named_env_var(server: FakeServer, monkeypatch):
    monkeypatch.setenv("ADVBENCH_TEST_KEY", "sekret")
    server.client(api_key_env="ADVBENCH_TEST_KEY").complete(USER)
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sekret"
    monkeypatch.delenv("ADVBENCH_TEST_KEY")
    with pytest.raises(EndpointError, match="ADVBENCH_TEST_KEY"):
        server.client(api_key_env="ADVBENCH_TEST_KEY").complete(USER)


def test_500_then_200_is_retried(server: FakeServer):
    server.steps = [(500, {"error": "overloaded"}), (200, reply("recovered"))]
    assert server.client().complete(USER) == "recovered"
    assert len(server.requests) == 2


def test_429_is_retried_until_attempts_run_out(server: FakeServer):
    server.steps = [(429, {"error": "slow down"})] * 3
    with pytest.raises(EndpointError) as info:
        server.client(retries=2).complete(USER)
    assert len(server.requests) == 3
    assert info.value.status == 429 and info.value.attempts == 3
    assert server.url in str(info.value) and "HTTP 429" in str(info.value)
    assert "3 attempts" in str(info.value)


def test_400_is_not_retried(server: FakeServer):
    server.steps = [(400, {"error": "bad request: unknown field"}), (200, reply("never"))]
    with pytest.raises(EndpointError) as info:
        server.client(retries=3).complete(USER)
    assert len(server.requests) == 1
    message = str(info.value)
    assert "HTTP 400" in message and "unknown field" in message and "not retried" in message
    assert server.url in message and info.value.attempts == 1


def test_timeout_is_retried_then_fails_with_endpoint_error(server: FakeServer):
    server.steps = [("sleep", 0.6), ("sleep", 0.6)]
    start = time.monotonic()
    with pytest.raises(EndpointError) as info:
        server.client(timeout_s=0.2, retries=1).complete(USER)
    assert time.monotonic() - start < 1.5  # two 0.2 s timeouts, not two 0.6 s sleeps
    assert len(server.requests) == 2
    assert "Timeout" in str(info.value) and "2 attempts" in str(info.value)
    assert info.value.status is None


def test_connection_refused_is_retried_then_fails(server: FakeServer):
    url = server.url
    server.close()
    client = ChatClient(EndpointConfig(url=url, model="m", retries=1, backoff_s=0.001))
    with pytest.raises(EndpointError, match="Connect.*2 attempts"):
        client.complete(USER)


@pytest.mark.parametrize("body", [
    b"this is not json",
    {"choices": []},
    {"no_choices": True},
    {"choices": [{"message": {"content": None}}]},
    [1, 2, 3],
])
def test_malformed_body_raises_endpoint_error_without_retry(server: FakeServer, body):
    server.steps = [(200, body)]
    with pytest.raises(EndpointError, match="malformed reply"):
        server.client().complete(USER)
    assert len(server.requests) == 1


def test_config_forbids_unknown_keys_and_keeps_defaults():
    config = EndpointConfig(url="http://x/v1", model="m")
    assert (config.timeout_s, config.retries, config.backoff_s, config.temperature,
            config.max_tokens, config.api_key_env) == (60, 3, 1.0, 0, None, None)
    with pytest.raises(ValidationError):
        EndpointConfig(url="http://x/v1", model="m", api_key="sk-should-not-be-here")


def test_images_without_a_user_message_are_refused():
    client = ChatClient(EndpointConfig(url="http://127.0.0.1:9/v1", model="m"))
    with pytest.raises(ValueError, match="user message"):
        client.payload([{"role": "system", "content": "x"}], [b"img"])
