"""Notifications through a real worker on real Redis: signed webhooks, retries, 410, replay, LINE pushes.

Every webhook receiver is a local server (``tests.files.webhook_receiver``) that verifies each request
with the ``standardwebhooks`` package. Retries are made fast by lowering the actors' backoff options for
the test; what the tests check is what was recorded and received, never how long it took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.files.webhook_receiver import Answer, WebhookReceiver, line_receiver, webhook_receiver
from tests.support import wait_for_job, wait_until

pytestmark = pytest.mark.timeout(120)

FILE_DATA = {"file_id": 7, "filename": "notes.txt", "status": "completed"}
LINE_TOKEN = "planted-line-token-8c1f"


@pytest.fixture
def endpoints() -> Iterator[list[int]]:
    """Ids of the endpoints a test registers, removed when it ends so later events skip them."""
    from pipelines.notifications import remove_webhook
    from processing.errors import NotFound

    created: list[int] = []
    yield created
    for endpoint_id in created:
        with contextlib.suppress(NotFound):
            remove_webhook(endpoint_id)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Short backoffs on the notification actors for one test; call it to change the retry count."""
    from actors.notifications import deliver_webhook, push_line

    def apply(*, max_retries: int = 3, min_backoff: int = 50, max_backoff: int = 200) -> None:
        for actor in (deliver_webhook, push_line):
            monkeypatch.setitem(actor.options, "max_retries", max_retries)
            monkeypatch.setitem(actor.options, "min_backoff", min_backoff)
            monkeypatch.setitem(actor.options, "max_backoff", max_backoff)

    apply()
    return apply


@contextlib.contextmanager
def subscribed(endpoints: list[int], events: tuple[str, ...] = ("file.completed",)) -> Iterator[WebhookReceiver]:
    """A running receiver, registered as an endpoint for ``events`` under a secret made for it."""
    from pipelines.notifications import add_webhook
    from processing.notifications import new_secret

    secret = new_secret()
    with webhook_receiver(secret) as receiver:
        endpoint = add_webhook(receiver.url + "/hooks", list(events), secret=secret)
        endpoints.append(endpoint["id"])
        receiver.endpoint_id = endpoint["id"]
        yield receiver


def _settings(monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    import actors.notifications
    from settings import settings

    monkeypatch.setattr(actors.notifications, "settings", dataclasses.replace(settings, **changes))


def _send(event_type: str, data: dict[str, Any], endpoint_id: int) -> int:
    """Send the event; the id of its one delivery to ``endpoint_id``."""
    from pipelines.notifications import get_delivery, send_event

    ids = send_event(event_type, data)
    found = [i for i in ids if (get_delivery(i) or {}).get("endpoint_id") == endpoint_id]
    assert len(found) == 1, (ids, endpoint_id)
    return found[0]


def _settled(delivery_id: int, timeout: float = 60.0) -> dict[str, Any]:
    """The delivery once it has left ``pending``."""
    from pipelines.notifications import get_delivery

    def done() -> dict[str, Any] | None:
        row = get_delivery(delivery_id)
        return row if row is not None and row["status"] != "pending" else None

    row = wait_until(done, timeout=timeout, interval=0.02)
    assert row is not None
    return row


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_signature_is_the_standard_one_and_the_receivers_library_verifies_it() -> None:
    # Given a new secret and a payload signed for one attempt
    from standardwebhooks import Webhook, WebhookVerificationError

    from processing.notifications import build_payload, encode, new_secret, new_webhook_id, signed_headers

    secret = new_secret()
    body = encode(build_payload("file.completed", FILE_DATA))
    headers = signed_headers(secret, new_webhook_id(), body)

    # Then the secret and headers have the spec's form, and the standardwebhooks library verifies them
    assert secret.startswith("whsec_")
    assert headers["webhook-id"].startswith("msg_") and headers["webhook-timestamp"].isdigit()
    assert headers["webhook-signature"].startswith("v1,")
    verified = Webhook(secret).verify(body, headers)
    assert verified["type"] == "file.completed" and verified["data"] == FILE_DATA
    assert verified["timestamp"].endswith("Z")
    # And a changed body or another secret does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("notes", "other"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_unknown_events_bad_urls_and_bad_secrets_are_refused_with_one_line() -> None:
    from pipelines.notifications import add_webhook, list_deliveries, send_event
    from processing.errors import InvalidArgument

    # When an endpoint or an event names an event outside the vocabulary, or has a bad URL or secret
    cases = [
        lambda: add_webhook("https://example.com/hook", ["file.deleted"]),
        lambda: add_webhook("https://example.com/hook", []),
        lambda: add_webhook("ftp://example.com/hook", ["file.completed"]),
        lambda: add_webhook("https://example.com/hook", ["file.completed"], secret="whsec_dG9vIHNob3J0"),
        lambda: send_event("file.uploaded", {}),
        lambda: list_deliveries(status="lost"),
    ]
    for case in cases:
        # Then each is an InvalidArgument of one line
        with pytest.raises(InvalidArgument) as raised:
            case()
        assert "\n" not in str(raised.value)
    # And an unknown event's message names the events there are; a secret is never quoted back
    with pytest.raises(InvalidArgument, match=re.escape("file.completed, file.failed, storage.quota, summary.daily")):
        send_event("file.uploaded", {})
    with pytest.raises(InvalidArgument) as raised:
        add_webhook("https://example.com/hook", ["file.completed"], secret="whsec_dG9vIHNob3J0")
    assert "dG9vIHNob3J0" not in str(raised.value)


def test_a_200_delivers_the_signed_event_to_subscribed_endpoints_only_and_records_it(
    worker: Any, loopback_allowed: None, endpoints: list[int]
) -> None:
    # Given an endpoint subscribed to file.completed, and another subscribed to file.failed only
    from pipelines.notifications import get_delivery, list_webhooks, send_event

    with subscribed(endpoints) as receiver, subscribed(endpoints, ("file.failed",)) as other:
        # When file.completed is sent
        ids = send_event("file.completed", FILE_DATA)
        targets = {(get_delivery(i) or {}).get("endpoint_id") for i in ids}
        [mine] = [i for i in ids if (get_delivery(i) or {}).get("endpoint_id") == receiver.endpoint_id]
        delivery = _settled(mine)

    # Then the subscribed endpoint got it once, verified, and the delivery is recorded delivered
    assert other.endpoint_id not in targets and other.requests() == []
    assert delivery["status"] == "delivered", delivery
    assert (delivery["attempts"], delivery["last_status_code"], delivery["last_error"]) == (1, 200, None)
    assert delivery["last_response"] == "ok" and delivery["delivered_at"] is not None
    assert delivery["target"] == receiver.url + "/hooks" and delivery["channel"] == "webhook"
    [request] = receiver.requests()
    assert request.verified and request.path == "/hooks"
    assert request.header("webhook-id") == delivery["webhook_id"]
    assert json.loads(request.body) == delivery["payload"]
    assert delivery["payload"]["type"] == "file.completed" and delivery["payload"]["data"] == FILE_DATA
    # And the listing of endpoints never shows a secret
    assert all("secret" not in webhook for webhook in list_webhooks())


def test_a_500_then_a_200_is_delivered_on_the_second_attempt_under_the_same_webhook_id(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint that fails once, then accepts
    with subscribed(endpoints) as receiver:
        receiver.answer(500, 200)

        # When an event is sent to it
        delivery = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))

    # Then the retries middleware tried again and the second attempt delivered it
    assert delivery["status"] == "delivered", delivery
    assert (delivery["attempts"], delivery["last_status_code"]) == (2, 200)
    first, second = receiver.requests()
    assert first.verified and second.verified
    assert first.header("webhook-id") == second.header("webhook-id") == delivery["webhook_id"]
    assert first.body == second.body


def test_a_receiver_that_is_down_is_retried_and_each_attempt_is_recorded_with_its_error(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint whose port nothing listens on, and one retry after a backoff
    from pipelines.notifications import add_webhook, get_delivery

    fast_retries(max_retries=1, min_backoff=2_000, max_backoff=2_000)
    endpoint = add_webhook(f"http://127.0.0.1:{_free_port()}/hooks", ["file.completed"])
    endpoints.append(endpoint["id"])

    # When an event is sent to it
    delivery_id = _send("file.completed", FILE_DATA, endpoint["id"])

    # Then the first attempt is recorded with the connection error and the time of the next attempt
    def first_recorded() -> dict[str, Any] | None:
        row = get_delivery(delivery_id)
        return row if row is not None and row["attempts"] >= 1 else None

    waiting = wait_until(first_recorded, timeout=30)
    assert waiting is not None
    assert waiting["status"] == "pending" and waiting["attempts"] == 1, waiting
    assert waiting["last_error"].startswith("connection failed: ConnectError")
    assert waiting["next_attempt_at"] is not None and waiting["next_attempt_at"] > waiting["updated_at"]
    # And when the retry fails too, the delivery ends failed with the error of its last attempt
    delivery = _settled(delivery_id)
    assert delivery["status"] == "failed" and delivery["attempts"] == 2, delivery
    assert delivery["last_error"].startswith("connection failed: ConnectError")
    assert delivery["last_error"].endswith("(gave up after 2 attempts)")
    assert delivery["last_status_code"] is None and delivery["next_attempt_at"] is None


def test_a_slow_receiver_is_a_timeout_and_counts_as_a_failed_attempt(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 300 ms webhook timeout, no retries, and a receiver that takes 3 s to answer
    _settings(monkeypatch, webhook_timeout=300)
    fast_retries(max_retries=0)
    with subscribed(endpoints) as receiver:
        receiver.answer(Answer(200, delay_s=3.0))

        # When an event is sent to it
        delivery = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))

    # Then the attempt is a timeout, recorded as a failure
    assert delivery["status"] == "failed", delivery
    assert delivery["last_error"] == "timeout: no complete answer within 300 ms (gave up after 1 attempt)"
    assert delivery["attempts"] == 1 and delivery["delivered_at"] is None


def test_a_redirect_is_a_failure_and_is_not_followed(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint that answers 302 towards another path of the same server
    fast_retries(max_retries=1)
    with subscribed(endpoints) as receiver:
        receiver.answer(Answer(302, headers={"Location": receiver.url + "/elsewhere"}))

        # When an event is sent to it
        delivery = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))

    # Then each attempt counted as a failure and nothing was sent where the redirect pointed
    assert delivery["status"] == "failed", delivery
    assert delivery["last_status_code"] == 302 and delivery["attempts"] == 2
    assert delivery["last_error"] == "HTTP 302: a redirect, not followed (gave up after 2 attempts)"
    assert receiver.requests("/elsewhere") == [] and len(receiver.requests("/hooks")) == 2


def test_a_410_disables_the_endpoint_and_ends_the_delivery_without_another_attempt(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint that answers 410 Gone
    from pipelines.notifications import enable_webhook, get_webhook, send_event

    with subscribed(endpoints) as receiver:
        receiver.answer(410, 200)
        endpoint_id = receiver.endpoint_id

        # When an event is sent to it
        delivery_id = _send("file.completed", FILE_DATA, endpoint_id)
        delivery = _settled(delivery_id)

        # Then the delivery is disabled after one attempt, its job succeeded (nothing to retry), and the
        # endpoint is disabled with the reason
        assert delivery["status"] == "disabled" and delivery["attempts"] == 1, delivery
        assert delivery["last_status_code"] == 410
        assert wait_for_job(delivery["message_id"]).state == "succeeded"
        webhook = get_webhook(endpoint_id)
        assert webhook is not None and webhook["enabled"] is False
        assert webhook["disabled_reason"] == f"HTTP 410 Gone on delivery {delivery_id}"

        # And a later event is not sent to it, until it is enabled again
        later = send_event("file.completed", FILE_DATA)
        assert all(_endpoint_of(i) != endpoint_id for i in later)
        assert len(receiver.requests()) == 1
        enable_webhook(endpoint_id)
        again = _settled(_send("file.completed", FILE_DATA, endpoint_id))
    assert again["status"] == "delivered" and len(receiver.requests()) == 2


def _endpoint_of(delivery_id: int) -> int | None:
    from pipelines.notifications import get_delivery

    return (get_delivery(delivery_id) or {}).get("endpoint_id")


def test_when_the_retries_are_spent_the_delivery_ends_failed(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint that always answers 500, and two retries
    fast_retries(max_retries=2)
    with subscribed(endpoints) as receiver:
        receiver.answer(500)

        # When an event is sent to it
        delivery = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))

    # Then three attempts were made, all signed alike, and the delivery is failed with the last answer
    assert delivery["status"] == "failed", delivery
    assert (delivery["attempts"], delivery["last_status_code"]) == (3, 500)
    assert delivery["last_error"] == "HTTP 500 (gave up after 3 attempts)"
    requests = receiver.requests()
    assert len(requests) == 3 and all(r.verified for r in requests)
    assert {r.header("webhook-id") for r in requests} == {delivery["webhook_id"]}
    assert wait_for_job(delivery["message_id"]).state == "dead"


def test_a_webhook_to_a_loopback_address_is_refused_unless_the_policy_trusts_it(
    worker: Any, endpoints: list[int], fast_retries: Any
) -> None:
    # Given an endpoint on 127.0.0.1 and the default outbound policy (public addresses only)
    with subscribed(endpoints) as receiver:
        # When an event is sent to it
        delivery = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))

    # Then no request was made, and the delivery failed at once with the reason
    assert receiver.requests() == []
    assert delivery["status"] == "failed" and delivery["attempts"] == 1, delivery
    assert delivery["last_error"] == "refused: 127.0.0.1 resolves to 127.0.0.1, a loopback address"


def test_a_replay_is_a_new_delivery_of_the_same_payload_and_webhook_id(
    worker: Any, loopback_allowed: None, endpoints: list[int], fast_retries: Any
) -> None:
    # Given a delivery that failed for good
    from pipelines.notifications import list_deliveries, replay_delivery

    fast_retries(max_retries=0)
    with subscribed(endpoints) as receiver:
        receiver.answer(503, 200)
        original = _settled(_send("file.completed", FILE_DATA, receiver.endpoint_id))
        assert original["status"] == "failed", original

        # When it is replayed
        replay_id = replay_delivery(original["id"])
        replay = _settled(replay_id)

    # Then the replay is a delivery of its own, delivered, with the same payload and webhook id
    assert replay_id != original["id"] and replay["replay_of"] == original["id"]
    assert replay["status"] == "delivered" and replay["attempts"] == 1, replay
    assert (replay["payload"], replay["webhook_id"]) == (original["payload"], original["webhook_id"])
    first, second = receiver.requests()
    assert first.body == second.body and first.header("webhook-id") == second.header("webhook-id")
    # And the original keeps its record
    by_id = {row["id"]: row for row in list_deliveries(endpoint_id=original["endpoint_id"])}
    assert by_id[original["id"]]["status"] == "failed" and by_id[replay_id]["status"] == "delivered"


def test_a_line_push_retried_after_a_lost_answer_is_delivered_once_under_one_retry_key(
    worker: Any, fast_retries: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given LINE configured against a local push endpoint that takes the first push in but answers 500
    from pipelines.notifications import get_delivery, send_event

    caplog.set_level(logging.DEBUG)
    with line_receiver(LINE_TOKEN) as line:
        line.answer(Answer(500, accept=True), 200)
        _settings(
            monkeypatch, line_api_url=line.url + "/v2/bot/message/push", line_to="U123", line_channel_token=LINE_TOKEN
        )

        # When an event is sent
        ids = send_event("storage.quota", {"used_bytes": 950, "quota_bytes": 1000})
        [line_id] = [i for i in ids if (get_delivery(i) or {}).get("channel") == "line"]
        delivery = _settled(line_id)

    # Then the retry carried the same retry key, LINE said it had it already, and it was delivered once
    assert delivery["status"] == "delivered", delivery
    assert (delivery["attempts"], delivery["last_status_code"], delivery["target"]) == (2, 409, "line")
    keys = line.retry_keys()
    assert len(keys) == 2 and keys[0] == keys[1] == delivery["retry_key"]
    [pushed] = line.delivered
    assert pushed["to"] == "U123"
    assert pushed["messages"][0]["text"].startswith("[taskforge] storage.quota")
    assert "used_bytes: 950" in pushed["messages"][0]["text"]
    # And the token is in no log line
    assert LINE_TOKEN not in caplog.text


def test_the_line_token_appears_in_no_delivery_row_job_row_or_log_even_when_line_quotes_it(
    worker: Any, fast_retries: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given LINE configured with a token its push endpoint refuses, quoting it back in the answer
    from sqlalchemy import select

    from pipelines.notifications import get_delivery, send_event
    from storage.db import session_scope
    from storage.models import Job
    from storage.notifications import Delivery

    caplog.set_level(logging.DEBUG)
    with line_receiver("another-token") as line:
        _settings(monkeypatch, line_api_url=line.url, line_to="U123", line_channel_token=LINE_TOKEN)

        # When an event is sent
        ids = send_event("summary.daily", {"completed": 3, "failed": 1})
        [line_id] = [i for i in ids if (get_delivery(i) or {}).get("channel") == "line"]
        delivery = _settled(line_id)
        job = wait_for_job(delivery["message_id"])

    # Then the refused push failed at once (a 401 is not retried), and its record says why
    assert delivery["status"] == "failed" and delivery["attempts"] == 1, delivery
    assert delivery["last_error"] == "HTTP 401: LINE refused the push"
    assert "invalid token: Bearer ***" in delivery["last_response"]
    assert job.state == "failed"
    # And the token is nowhere: not in the deliveries table, the job table or the log
    with session_scope() as session:
        rows = [*session.scalars(select(Delivery)), *session.scalars(select(Job))]
    for row in rows:
        values = [getattr(row, column.name) for column in row.__table__.columns]
        assert all(LINE_TOKEN not in str(value) for value in values), row
    assert LINE_TOKEN not in caplog.text


def test_an_upload_ends_with_a_signed_file_completed_or_file_failed_event(
    worker: Any, storage_root: Any, loopback_allowed: None, endpoints: list[int]
) -> None:
    # Given a receiver subscribed to both file events
    from pipelines.files import file_status, upload_file

    with subscribed(endpoints, ("file.completed", "file.failed")) as receiver:
        # When a readable file and an empty one are uploaded
        kestrel = b"Kestrels hover over the meadow before they dive for voles."
        good = upload_file(kestrel, "kestrel.txt", owner="ed").file_id
        bad = upload_file(b"", "empty.txt", owner="ed").file_id

        # Then each run ends with one verified event that says how it ended
        wait_until(lambda: len(receiver.payloads()) >= 2 or None, timeout=120, interval=0.05)
        events = {payload["data"]["file_id"]: payload for payload in receiver.payloads()}
    assert events[good]["type"] == "file.completed"
    assert events[good]["data"]["status"] == "completed" and events[good]["data"]["owner"] == "ed"
    assert "kestrels" in events[good]["data"]["tags"]
    assert events[bad]["type"] == "file.failed"
    assert events[bad]["data"]["failed_step"] == "detect"
    assert events[bad]["data"]["error"] == "empty.txt is empty (0 bytes)"
    assert file_status(good)["status"] == "completed"  # type: ignore[index]


def test_the_cli_adds_a_webhook_lists_deliveries_and_replays_one(
    worker: Any, storage_root: Any, loopback_allowed: None, endpoints: list[int], tmp_path: Any
) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pipelines.notifications import list_deliveries
    from processing.notifications import new_secret

    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(root), "URL_ALLOWED_NETWORKS": "127.0.0.0/8"}
        command = [sys.executable, "-m", "cli", *args]
        return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=180)

    secret = new_secret()
    with webhook_receiver(secret) as receiver:
        # Given an endpoint added from the command line
        added = cli("webhooks", "add", receiver.url + "/cli", "--events", "file.completed", "--secret", secret)
        assert added.returncode == 0, added.stderr
        endpoint_id = json.loads(added.stdout)["id"]
        endpoints.append(endpoint_id)
        assert str(endpoint_id) in cli("webhooks").stdout

        # When a file is uploaded and waited for from the command line
        path = tmp_path / "heron.txt"
        path.write_text("A grey heron stands still in the shallows, waiting for fish.")
        uploaded = cli("upload", str(path), "--owner", "fay", "--wait", "--timeout", "120")

        # Then it is completed and its event delivered, which the deliveries command lists
        assert uploaded.returncode == 0, uploaded.stderr
        assert json.loads(uploaded.stdout)["status"] == "completed"
        delivered = wait_until(
            lambda: [d for d in list_deliveries(endpoint_id=endpoint_id) if d["status"] == "delivered"] or None,
            timeout=60,
            interval=0.05,
        )
        listing = cli("deliveries", "--status", "delivered")
        assert listing.returncode == 0 and f"{delivered[0]['id']}" in listing.stdout, listing.stderr

        # When it is replayed
        replayed = cli("deliveries", "replay", str(delivered[0]["id"]))

        # Then a new delivery of the same payload and webhook id reaches the receiver again
        assert replayed.returncode == 0, replayed.stderr
        wait_until(lambda: len(receiver.requests("/cli")) >= 2 or None, timeout=60, interval=0.05)
        first, second = receiver.requests("/cli")[:2]
        assert first.body == second.body and first.header("webhook-id") == second.header("webhook-id")

    # And a bad command is one line and exit code 1
    missing = cli("deliveries", "replay", "999999")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "999999" in missing.stderr
    files = cli("files", "--owner", "fay")
    assert files.returncode == 0 and "heron.txt" in files.stdout and "completed" in files.stdout
