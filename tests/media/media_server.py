"""A small HTTP/1.1 file server for tests: Range requests, content types, and a log of what was asked."""

from __future__ import annotations

import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".wav": "audio/wav",
    ".vtt": "text/vtt",
    ".json3": "application/json",
    ".xml": "application/rss+xml",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain",
}


class MediaServer:
    """Serves ``root`` on 127.0.0.1 at a free port; ``requests`` lists ``(method, path, range)``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []
        self.content_types: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, *, body: bool) -> None:
                path = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
                server.requests.append((self.command, "/" + path, self.headers.get("Range")))
                target = (server.root / path).resolve()
                if server.root.resolve() not in target.parents or not target.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = target.read_bytes()
                ctype = server.content_types.get(target.name) or CONTENT_TYPES.get(target.suffix)
                ctype = ctype or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                start, end, status = 0, len(data) - 1, 200
                range_header = self.headers.get("Range")
                if range_header and range_header.startswith("bytes=") and data:
                    first, _, last = range_header[6:].split(",")[0].partition("-")
                    if first:
                        start = int(first)
                        end = min(int(last), len(data) - 1) if last else len(data) - 1
                    elif last:
                        start = max(0, len(data) - int(last))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                chunk = data[start : end + 1]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients (ffprobe) hang up once they have read the header; that is fine

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="media-server", daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
