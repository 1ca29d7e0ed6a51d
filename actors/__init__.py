"""Every actor of the platform. Importing this package builds the broker and registers all actors, so
``dramatiq actors`` (or ``dramatiq actors -Q media``) just works.

Domain modules import their heavy libraries lazily, inside the processing functions they call, so a
worker that serves only the ``documents`` queue never loads Whisper.
"""

from __future__ import annotations

from broker import setup_broker

broker = setup_broker()

# Registered after the broker exists: each module's actors attach to it as they are declared.
from actors import collection, documents, files, llm, maintenance, market, media, notifications  # noqa: E402

__all__ = ["broker", "collection", "documents", "files", "llm", "maintenance", "market", "media", "notifications"]
