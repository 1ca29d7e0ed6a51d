"""A local HTTP server for the collection tests: each path answers what the test says, in real formats.

    server = FeedServer()
    server.route("/rss.xml", body=rss_bytes, headers={"ETag": '"v1"'})
    server.route("/gone", status=410)
    server.url + "/rss.xml"

Requests are recorded (path and headers); an ETag route answers ``304`` to a matching
``If-None-Match``, as real servers do.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    gzip: bool = False
    trickle_s: float = 0.0  # pause between chunks of the body


@dataclass
class Request:
    path: str
    headers: dict[str, str]


class FeedServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = server.routes.get(self.path.split("?")[0])
                if route is None:
                    self._send(404, b"not found", {"Content-Type": "text/plain"})
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                etag = route.headers.get("ETag")
                if etag and self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", {"ETag": etag})
                    return
                body = route.body
                headers = dict(route.headers)
                if route.gzip:
                    body = gzip.compress(body)
                    headers["Content-Encoding"] = "gzip"
                self._send(route.status, body, headers, trickle_s=route.trickle_s)

            def _send(self, status: int, body: bytes, headers: dict[str, str], trickle_s: float = 0.0) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if trickle_s:
                        for start in range(0, len(body), 16):
                            self.wfile.write(body[start : start + 16])
                            self.wfile.flush()
                            time.sleep(trickle_s)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, path: str, **kwargs: Any) -> str:
        self.routes[path] = Route(**kwargs)
        return self.url + path

    def hits(self, path: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------
# Documents in the real formats
# --------------------------------------------------------------------------------------------------


def rss(items: list[dict[str, Any]], *, ttl: int | None = None, title: str = "Test feed") -> bytes:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rss version="2.0"><channel>',
        f"<title>{title}</title>",
        "<link>https://feed.example.org/</link>",
        "<description>test</description>",
    ]
    if ttl is not None:
        parts.append(f"<ttl>{ttl}</ttl>")
    for item in items:
        parts.append("<item>")
        parts.append(f"<title>{item['title']}</title>")
        if item.get("url"):
            parts.append(f"<link>{item['url'].replace('&', '&amp;')}</link>")
        parts.append(f'<guid isPermaLink="false">{item["guid"]}</guid>')
        parts.append(f"<description><![CDATA[{item.get('summary', '')}]]></description>")
        if item.get("published_at") is not None:
            parts.append(f"<pubDate>{format_datetime(item['published_at'])}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def atom(items: list[dict[str, Any]]) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        "<title>Atom test</title>",
        "<id>urn:test:feed</id>",
        "<updated>2026-01-01T00:00:00Z</updated>",
    ]
    for item in items:
        when = item["published_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        parts += [
            "<entry>",
            f"<title>{item['title']}</title>",
            f'<link href="{item["url"]}"/>' if item.get("url") else "",
            f"<id>{item['guid']}</id>",
            f"<updated>{when}</updated>",
            f"<published>{when}</published>",
            f"<summary>{item.get('summary', '')}</summary>",
            "</entry>",
        ]
    parts.append("</feed>")
    return "\n".join(parts).encode()


def reddit_listing(posts: list[dict[str, Any]]) -> dict[str, Any]:
    children = []
    for post in posts:
        data = {
            "name": f"t3_{post['id']}",
            "id": post["id"],
            "title": post["title"],
            "is_self": post.get("is_self", False),
            "selftext": post.get("selftext", ""),
            "url": post.get("url") or f"https://www.reddit.com/r/test/comments/{post['id']}/x/",
            "permalink": f"/r/test/comments/{post['id']}/x/",
            "created_utc": post["published_at"].timestamp(),
            "score": post.get("score", 1),
            "author": "someone",
        }
        children.append({"kind": "t3", "data": data})
    # A comment in the listing (kind t1) is not a post: it must be skipped.
    children.append({"kind": "t1", "data": {"name": "t1_zz", "body": "a comment"}})
    return {"kind": "Listing", "data": {"after": None, "before": None, "dist": len(posts), "children": children}}
