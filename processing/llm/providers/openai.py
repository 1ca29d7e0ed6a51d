"""OpenAI-compatible chat completions through the official ``openai`` SDK, with a configurable base URL,
so a local vLLM, Ollama or llama.cpp server works too. The schema goes as ``response_format`` of type
``json_schema``; images as ``data:`` URLs.

The SDK's own retries are off (``max_retries=0``), as for Anthropic: the platform retries.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from processing.llm.providers.sdk_errors import translate
from processing.llm.types import Message, Reply, Request, Usage

NAME = "openai"


def _content(message: Message) -> Any:
    if message.role != "user" or not message.images:
        return message.text
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": f"data:{image.media_type};base64,{image.base64()}"}}
        for image in message.images
    ]
    parts.append({"type": "text", "text": message.text})
    return parts


class OpenAIProvider:
    name = NAME

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str = "",
        timeout_ms: int = 120_000,
        default_wait_ms: int = 30_000,
    ) -> None:
        # A local server needs no key, but the SDK insists on one.
        self._api_key = api_key or "unused"
        self.model = model
        self.base_url = base_url
        self.timeout_ms = timeout_ms
        self.default_wait_ms = default_wait_ms
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r})"

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(
                        api_key=self._api_key,
                        base_url=self.base_url or None,
                        max_retries=0,
                        timeout=self.timeout_ms / 1000,
                    )
        return self._client

    def complete(self, request: Request) -> Reply:
        import openai

        started = time.perf_counter()
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}]
        messages += [{"role": m.role, "content": _content(m)} for m in request.messages]
        try:
            completion = self.client().chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=request.max_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": request.schema_name, "schema": request.schema},
                },
            )
        except openai.APIError as error:
            raise translate(
                error,
                provider=NAME,
                timeout_ms=self.timeout_ms,
                default_wait_ms=self.default_wait_ms,
                status_error=openai.APIStatusError,
                timeout_error=openai.APITimeoutError,
                connection_error=openai.APIConnectionError,
            ) from None
        text = completion.choices[0].message.content or "" if completion.choices else ""
        usage = completion.usage
        cached = 0
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = int(usage.prompt_tokens_details.cached_tokens or 0)
        return Reply(
            text=text,
            usage=Usage(
                input_tokens=int(usage.prompt_tokens or 0) if usage else 0,
                output_tokens=int(usage.completion_tokens or 0) if usage else 0,
                cached_tokens=cached,
            ),
            model=completion.model or self.model,
            provider=NAME,
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=getattr(completion, "_request_id", None),
        )
