"""What goes into a provider and what comes out."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Image:
    """An image sent with a message: its bytes and media type (``image/png``, ``image/jpeg``)."""

    data: bytes
    media_type: str = "image/png"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class Message:
    role: str  # "user" or "assistant"
    text: str
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class Request:
    """One structured-output call: a system prompt, the conversation so far, the schema the reply keeps."""

    system: str
    messages: tuple[Message, ...]
    schema: dict[str, Any]
    schema_name: str
    max_tokens: int = 4096

    def key(self, provider: str, model: str) -> str:
        """The cache key: provider, model, prompt, schema and the images' hashes (not their bytes)."""
        payload = {
            "provider": provider,
            "model": model,
            "system": self.system,
            "messages": [[m.role, m.text, [image.sha256 for image in m.images]] for m in self.messages],
            "schema": self.schema,
            "max_tokens": self.max_tokens,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def prompt_chars(self) -> int:
        return len(self.system) + sum(len(m.text) for m in self.messages)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Reply:
    """What a provider answered: its raw text, the tokens it billed, the model that answered."""

    text: str
    usage: Usage
    model: str
    provider: str
    latency_ms: float
    request_id: str | None = None
    data: Any = field(default=None, compare=False)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "usage": asdict(self.usage)})

    @classmethod
    def from_json(cls, text: str | bytes) -> Reply:
        raw = json.loads(text)
        raw["usage"] = Usage(**raw["usage"])
        return cls(**raw)


@dataclass
class Call:
    """One request to a provider, as the ledger records it (a failed one too)."""

    key: str
    provider: str
    model: str
    outcome: str  # see OUTCOMES
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    raw_reply: str | None = None
    error: str | None = None


#: Outcomes of a call, the ``outcome`` label of ``llm_requests_total`` and the column of ``llm_calls``.
OUTCOMES = (
    "ok",  # the provider answered and the reply kept the schema
    "invalid",  # the provider answered but the reply was not JSON or broke the schema (billed)
    "cached",  # served from the request cache; nothing was sent
    "reused",  # a redelivered job's call that had already succeeded; nothing was sent
    "rate_limited",  # 429/529 with a wait, or over the platform's own limit; the job is delayed
    "transient",  # 5xx, timeout, connection error; the job is retried
    "rejected",  # 400/401/403 and the like; the job fails
)
