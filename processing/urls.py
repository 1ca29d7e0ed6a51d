"""Canonical URLs: one spelling per page, so the same story found twice is stored once.

Lower-case scheme and host, no default port, no fragment, no empty query, no tracking parameters
(``utm_*`` and the common click ids), the remaining query sorted, ``/`` for an empty path, and no
trailing ``/`` on other paths. Anything that does not parse as an http(s) URL comes back as it was.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

TRACKING_PARAMETERS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "mc_cid", "mc_eid", "yclid", "igshid",
        "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ref_url", "cmpid", "s_kwcid", "spm", "oly_anon_id",
        "oly_enc_id", "vero_id", "__twitter_impression", "ncid", "sr_share", "rss", "at_medium", "at_campaign",
    }
)  # fmt: skip
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("utm_") or lowered in TRACKING_PARAMETERS


def canonical_url(url: str | None) -> str | None:
    """The canonical spelling of ``url`` (None stays None)."""
    if not url:
        return None
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return text
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~") or "/"
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _tracking(k))
    return urlunsplit((scheme, host, path, urlencode(query), ""))
