"""Claude through the official ``anthropic`` SDK: the Messages API, a JSON schema as the output format,
images as base64 blocks.

The SDK's own retries are off (``max_retries=0``): a 429 or 529 becomes a delayed message and a 5xx a
platform retry, so one layer retries and a worker thread never sleeps through a ``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from processing.llm.providers.sdk_errors import translate
from processing.llm.types import Message, Reply, Request, Usage

NAME = "anthropic"


def _content(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.base64()}}
        for image in message.images
    ]
    blocks.append({"type": "text", "text": message.text})
    return blocks


class AnthropicProvider:
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
        self._api_key = api_key
        self.model = model
        self.base_url = base_url
        self.timeout_ms = timeout_ms
        self.default_wait_ms = default_wait_ms
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self.base_url!r})"

    def client(self) -> Any:
        """One SDK client per provider object, shared by threads (it keeps a connection pool)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import anthropic

                    self._client = anthropic.Anthropic(
                        api_key=self._api_key,
                        base_url=self.base_url or None,
                        max_retries=0,
                        timeout=self.timeout_ms / 1000,
                    )
        return self._client

    def complete(self, request: Request) -> Reply:
        import anthropic

        started = time.perf_counter()
        try:
            message = self.client().messages.create(
                model=self.model,
                max_tokens=request.max_tokens,
                system=request.system,
                messages=[{"role": m.role, "content": _content(m)} for m in request.messages],
                output_config={"format": {"type": "json_schema", "schema": request.schema}},
            )
        except anthropic.APIError as error:
            raise translate(
                error,
                provider=NAME,
                timeout_ms=self.timeout_ms,
                default_wait_ms=self.default_wait_ms,
                status_error=anthropic.APIStatusError,
                timeout_error=anthropic.APITimeoutError,
                connection_error=anthropic.APIConnectionError,
            ) from None
        text = "".join(block.text for block in message.content if getattr(block, "type", "") == "text")
        usage = message.usage
        return Reply(
            text=text,
            usage=Usage(
                input_tokens=int(usage.input_tokens or 0) + int(usage.cache_read_input_tokens or 0),
                output_tokens=int(usage.output_tokens or 0),
                cached_tokens=int(usage.cache_read_input_tokens or 0),
            ),
            model=message.model or self.model,
            provider=NAME,
            latency_ms=(time.perf_counter() - started) * 1000,
            request_id=getattr(message, "_request_id", None),
        )
