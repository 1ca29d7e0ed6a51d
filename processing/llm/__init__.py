"""LLM analysis as plain functions: providers, prompts, schemas, limits and a request cache.

Nothing here imports Dramatiq; the SDKs load lazily inside the providers that use them. A provider turns
a ``Request`` (messages, optional images, a JSON schema) into a ``Reply`` (parsed JSON, raw text, token
usage, model, latency); ``complete`` adds what every call needs around it: the cache, the rate limits,
re-asking a reply that breaks the schema, and a record of each call for the caller's ledger.
"""
