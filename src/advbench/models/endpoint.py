"""A small client for OpenAI-compatible chat-completions endpoints (vLLM, TGI, llama.cpp, ...).

One client serves every role that talks to a served model — the LLM that rewrites findings, a
VLM victim, an LLM judge — so it knows nothing about any of them: messages in, text out.
Keys are never part of a config (configs are released with the data); a config names the
environment variable that holds one. Served models fail transiently (restarts, queues, rate
limits), so connection errors, timeouts, 429 and 5xx are retried with exponential backoff;
other 4xx mean the request itself is wrong and fail at once.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import time
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatClient", "EndpointConfig", "EndpointError"]


class EndpointError(RuntimeError):
    """A request that did not yield a reply; the message names URL, cause and attempts."""

    def __init__(self, message: str, *, url: str, status: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts


class EndpointConfig(BaseModel):
    """Where a served model is and how patiently to ask it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    url: str = Field(description="Base URL of the API, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name the server knows it by.")
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the API key.")
    timeout_s: float = Field(default=60, gt=0, description="Per-request timeout.")
    retries: int = Field(default=3, ge=0, description="Retries after the first attempt.")
    backoff_s: float = Field(default=1.0, ge=0, description="First backoff; doubles each retry.")
    temperature: float = Field(default=0, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _with_images(messages: list[dict[str, Any]], images: list[bytes]) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose last user message carries ``images`` as data-URL parts."""
    out = copy.deepcopy(messages)
    for message in reversed(out):
        if message.get("role") == "user":
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(
                content or [])
            for data in images:
                url = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
                parts.append({"type": "image_url", "image_url": {"url": url}})
            message["content"] = parts
            return out
    raise ValueError("images need a user message to go in, and there is none")


def _content(body: Any) -> str:
    """``choices[0].message.content`` as text (a string, or a list of text parts)."""
    content = body["choices"][0]["message"]["content"]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise TypeError(f"content is {type(content).__name__}, not text")


class ChatClient:
    """Chat completions against one endpoint. Reuses one connection pool; close() or use as a
    context manager when done."""

    def __init__(self, config: EndpointConfig, *, transport: httpx.BaseTransport | None = None):
        self.config = config
        self.endpoint = config.url.rstrip("/") + "/chat/completions"
        self._http = httpx.Client(timeout=config.timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        name = self.config.api_key_env
        if name:
            key = os.environ.get(name)
            if not key:
                raise EndpointError(
                    f"POST {self.endpoint}: environment variable {name} (api_key_env) is not "
                    "set", url=self.endpoint)
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def payload(self, messages: list[dict[str, Any]], images: list[bytes] | None = None
                ) -> dict[str, Any]:
        """The request body (exposed so callers can log or hash what was asked)."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": _with_images(messages, images) if images else messages,
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        return body

    def complete(self, messages: list[dict[str, Any]], *, images: list[bytes] | None = None
                 ) -> str:
        """The model's reply text to ``messages`` (images go into the last user message)."""
        body = self.payload(messages, images)
        headers = self._headers()
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            status: int | None = None
            try:
                response = self._http.post(self.endpoint, json=body, headers=headers)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if status < 400:
                    return self._parse(response, attempt)
                cause = f"HTTP {status}: {_excerpt(response.text)}"
                if not _retryable(status):
                    raise EndpointError(
                        f"POST {self.endpoint}: {cause} (attempt {attempt} of {attempts}; "
                        "not retried)", url=self.endpoint, status=status, attempts=attempt)
            if attempt == attempts:
                raise EndpointError(
                    f"POST {self.endpoint}: {cause} (failed after {attempts} attempts)",
                    url=self.endpoint, status=status, attempts=attempt)
            time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, response: httpx.Response, attempt: int) -> str:
        try:
            return _content(json.loads(response.content))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EndpointError(
                f"POST {self.endpoint}: malformed reply (HTTP {response.status_code}, attempt "
                f"{attempt}): {type(exc).__name__}: {exc}; body: {_excerpt(response.text)}",
                url=self.endpoint, status=response.status_code, attempts=attempt) from exc
