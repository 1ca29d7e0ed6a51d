"""The file drive over HTTP: multipart uploads to a real uvicorn server, status, thumbnails, reprocess."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import wait_until
from tests.web.conftest import start_server, stop_server

pytestmark = pytest.mark.timeout(300)

TEXT = "The glassblower gathers molten glass from the furnace on a long pipe and turns it while blowing a vase."


def _transparent_png() -> bytes:
    from PIL import Image

    image = Image.new("RGBA", (600, 300), (0, 0, 0, 0))
    image.paste((30, 90, 200, 255), (100, 50, 500, 250))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _finished(api: httpx.Client, file_id: int, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = api.get(f"/api/v1/files/{file_id}/status").json()
        return status if status["status"] in ("completed", "failed") else None  # type: ignore[no-any-return]

    return wait_until(done, timeout=timeout, interval=0.1)


def test_an_upload_answers_at_once_and_its_status_thumbnail_and_reprocess_are_served(server, api, worker) -> None:  # type: ignore[no-untyped-def]
    # Given a transparent PNG and a text file uploaded as multipart forms
    picture = api.post(
        "/api/v1/files/upload",
        files={"file": ("logo.png", _transparent_png(), "image/png")},
        data={"owner": "dora"},
    )
    notes = api.post("/api/v1/files/upload", files={"file": ("glassblower.txt", TEXT.encode(), "text/plain")})

    # Then each answers at once with its id, where it stands (a worker may already have taken it), and the
    # run's id
    assert picture.status_code == 200, picture.text
    assert picture.json()["status"] in ("pending", "processing") and picture.json()["run_id"]
    picture_id, notes_id = picture.json()["file_id"], notes.json()["file_id"]

    # When the worker analyses them
    status = _finished(api, picture_id)
    assert _finished(api, notes_id)["status"] == "completed"

    # Then the status has the type, the AI results and the thumbnail, which keeps the transparency
    assert status["status"] == "completed", status
    assert (status["kind"], status["owner"], status["ai"]["provider"]) == ("image", "dora", "offline")
    thumbnail = api.get(f"/api/v1/files/{picture_id}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    from PIL import Image

    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert image.size == (256, 128) and image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0  # type: ignore[index]

    # And the list filters by owner and status, and the search finds the text file by meaning
    listed = api.get("/api/v1/files", params={"owner": "dora", "status": "completed"}).json()
    assert [row["id"] for row in listed] == [picture_id]
    hits = api.get("/api/v1/files/search", params={"q": "who shapes hot glass into vases", "k": 1}).json()
    assert [hit["id"] for hit in hits] == [notes_id]

    # When the picture is reprocessed
    again = api.post(f"/api/v1/files/{picture_id}/reprocess")

    # Then it is pending under a new run, which completes it again
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert again.json()["run_id"] != status["message_id"]
    final = _finished(api, picture_id)
    assert final["status"] == "completed" and final["message_id"] == again.json()["run_id"]


def test_file_requests_that_cannot_be_served_get_a_4xx_with_one_readable_line(server, api, worker) -> None:  # type: ignore[no-untyped-def]
    # Given a text file, which has no thumbnail
    uploaded = api.post("/api/v1/files/upload", files={"file": ("plain.txt", TEXT.encode(), "text/plain")})
    file_id = uploaded.json()["file_id"]
    _finished(api, file_id)

    with server.client() as anonymous:
        cases = [
            (anonymous.post("/api/v1/files/upload", files={"file": ("a.txt", b"hello")}), 401, "Bearer"),
            (api.post("/api/v1/files/upload", data={"owner": "x"}), 422, "file"),
            (api.get("/api/v1/files/999999/status"), 404, "no file with id 999999"),
            (api.post("/api/v1/files/999999/reprocess"), 404, "file 999999 does not exist"),
            (api.get(f"/api/v1/files/{file_id}/thumbnail"), 404, f"file {file_id} has no thumbnail"),
            (api.get("/api/v1/files", params={"status": "lost"}), 422, "status"),
        ]
    for response, code, words in cases:
        assert response.status_code == code, response.text
        detail = response.json()["detail"]
        assert isinstance(detail, str) and words in detail and "\n" not in detail, detail


def test_an_upload_over_max_file_bytes_is_refused_before_anything_is_stored(
    broker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    # Given a server that takes files of at most 4 KB
    from settings import settings

    monkeypatch.setenv("MAX_FILE_BYTES", "4000")
    small = start_server(tmp_path / "server.log")
    blobs = settings.storage_root / "files" / "blobs"
    before = sorted(blobs.rglob("*")) if blobs.exists() else []
    try:
        with small.client(token=small.token) as client:
            # When a 200 KB file is uploaded, and then a 1 KB one
            big = client.post("/api/v1/files/upload", files={"file": ("big.bin", b"z" * 200_000)})
            fits = client.post("/api/v1/files/upload", files={"file": ("ok.txt", b"fine " * 200)})
    finally:
        stop_server(small.process)

    # Then the big one gets 413 naming the setting, nothing of it is stored, and the small one is taken
    assert big.status_code == 413, big.text
    assert "MAX_FILE_BYTES" in big.json()["detail"]
    assert fits.status_code == 200, fits.text
    after = sorted(blobs.rglob("*"))
    assert len(after) - len(before) <= 2  # the small file's blob (and its folder), never the big one
    assert not any(path.is_file() and path.stat().st_size >= 200_000 for path in after)


def test_webhooks_and_deliveries_are_managed_over_http(server, api) -> None:  # type: ignore[no-untyped-def]
    # Given an endpoint added over HTTP
    added = api.post("/api/v1/webhooks", json={"url": "https://example.com/hooks", "events": ["summary.daily"]})
    assert added.status_code == 200, added.text
    endpoint = added.json()
    try:
        # Then its secret is in that answer only, and the listing shows the endpoint without it
        assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["summary.daily"]
        listed = {row["id"]: row for row in api.get("/api/v1/webhooks").json()}
        assert endpoint["id"] in listed and "secret" not in listed[endpoint["id"]]

        # And bad requests are one readable line each
        bad_event = api.post("/api/v1/webhooks", json={"url": "https://example.com/x", "events": ["file.deleted"]})
        assert bad_event.status_code == 400 and "unknown event 'file.deleted'" in bad_event.json()["detail"]
        assert api.post("/api/v1/deliveries/999999/replay").status_code == 404
        assert api.get("/api/v1/deliveries/999999").status_code == 404
        assert api.get("/api/v1/deliveries", params={"status": "pending"}).status_code == 200
        with server.client() as anonymous:
            assert (
                anonymous.post("/api/v1/webhooks", json={"url": "https://e.com", "events": ["file.failed"]}).status_code
                == 401
            )
    finally:
        # When it is removed, it is gone from the listing
        assert api.delete(f"/api/v1/webhooks/{endpoint['id']}").status_code == 200
    assert endpoint["id"] not in {row["id"] for row in api.get("/api/v1/webhooks").json()}


def test_a_delivery_is_replayed_over_http_to_a_receiver_that_verifies_it(server, api, worker, loopback_allowed) -> None:  # type: ignore[no-untyped-def]
    # Given an endpoint added over HTTP whose receiver verifies each signature, and an event delivered to it
    from pipelines.notifications import send_event
    from processing.notifications import new_secret
    from tests.files.webhook_receiver import webhook_receiver

    secret = new_secret()
    with webhook_receiver(secret) as receiver:
        endpoint = api.post(
            "/api/v1/webhooks", json={"url": receiver.url + "/api", "events": ["summary.daily"], "secret": secret}
        ).json()
        try:
            [delivery_id] = [
                i
                for i in send_event("summary.daily", {"uploads": 1})
                if api.get(f"/api/v1/deliveries/{i}").json()["endpoint_id"] == endpoint["id"]
            ]
            wait_until(lambda: api.get(f"/api/v1/deliveries/{delivery_id}").json()["status"] == "delivered", timeout=60)

            # When it is replayed over HTTP
            replayed = api.post(f"/api/v1/deliveries/{delivery_id}/replay")

            # Then a new delivery of the same signed payload reaches the receiver and is recorded delivered
            assert replayed.status_code == 200, replayed.text
            new_id = replayed.json()["id"]
            wait_until(lambda: api.get(f"/api/v1/deliveries/{new_id}").json()["status"] == "delivered", timeout=60)
            first, second = receiver.requests("/api")[:2]
            assert first.verified and second.verified and first.body == second.body
            assert api.get(f"/api/v1/deliveries/{new_id}").json()["replay_of"] == delivery_id
        finally:
            api.delete(f"/api/v1/webhooks/{endpoint['id']}")
