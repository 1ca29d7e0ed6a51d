"""Messages over the size cap are refused at send, and failed at the worker when another sender let
one through; nothing else is affected."""

from __future__ import annotations

import pytest

from tests.support import wait_for_job


def test_a_message_over_the_cap_is_refused_at_send_with_one_clear_error(broker, redis_client):
    from middleware.message_size import MessageTooLarge
    from settings import settings
    from tests.core.sample_actors import counts

    broker.flush_all()
    # Given an argument of 50 MB
    huge = "x" * 50_000_000

    # When it is sent / Then the caller is told at once, with the size and the cap
    with pytest.raises(MessageTooLarge) as caught:
        counts.send("key", huge)
    message = str(caught.value)
    assert (
        "counts" in message and "47.7 MiB" in message and f"{settings.max_message_bytes / 1_048_576:.1f} MiB" in message
    )
    assert "\n" not in message
    # And nothing was enqueued
    assert redis_client.llen("dramatiq:default") == 0 and redis_client.hlen("dramatiq:default.msgs") == 0


def test_non_ascii_text_is_measured_by_its_encoded_size_not_its_length(broker, monkeypatch):
    from middleware.message_size import MessageSize, MessageTooLarge
    from tests.core.sample_actors import counts

    # Given a 64 KB cap, and text whose JSON escapes make it 6 bytes per character
    size_middleware = next(m for m in broker.middleware if isinstance(m, MessageSize))
    monkeypatch.setattr(size_middleware, "max_bytes", 64_000)
    accented = "é" * 20_000  # 20,000 characters, 120,000 bytes once escaped

    # When it is sent / Then the encoded size decides, not the character count
    with pytest.raises(MessageTooLarge):
        counts.send("key", accented)
    broker.flush_all()


def test_a_message_under_the_cap_is_not_encoded_to_be_measured(broker, monkeypatch):
    from dramatiq.message import Message

    from middleware.message_size import MessageSize

    # Given a count of every encode
    encodes: list[int] = []
    original = Message.encode
    monkeypatch.setattr(Message, "encode", lambda self: encodes.append(1) or original(self))
    size_middleware = next(m for m in broker.middleware if isinstance(m, MessageSize))

    # When a small message is checked / Then the cheap bound settles it without an encode
    message = Message(queue_name="default", actor_name="counts", args=("k", "v" * 1000), kwargs={}, options={})
    size_middleware.before_enqueue(broker, message, None)
    assert encodes == []


def test_an_oversized_message_from_another_sender_fails_at_the_worker_and_the_next_job_runs(
    worker, broker, redis_client
):
    from dramatiq.message import Message

    from middleware.message_size import MessageSize
    from tests.core.sample_actors import counts

    # Given a 2 MB message that a sender without the cap pushed straight to the queue
    redis_client.delete("size")
    size_middleware = next(m for m in broker.middleware if isinstance(m, MessageSize))
    message = Message(queue_name="default", actor_name="counts", args=("size", "y" * 2_000_000), kwargs={}, options={})
    message = message.copy(options={"redis_message_id": message.message_id})
    broker.do_enqueue("default", message.message_id, message.encode())
    assert len(message.encode()) > size_middleware.max_bytes

    # When the worker takes it / Then the job fails once, permanently, saying why
    row = wait_for_job(message.message_id)
    assert row.state == "failed" and row.attempts == 1
    assert row.error_message and "over the cap" in row.error_message
    assert redis_client.scard("size") == 0  # the actor never ran
    # And the worker goes on with the next job
    follow_up = counts.send("size", "small")
    assert wait_for_job(follow_up.message_id).state == "succeeded"


def test_an_actor_can_set_its_own_cap_and_an_invalid_one_fails_at_declaration(broker):
    import dramatiq

    from middleware.message_size import MessageTooLarge

    # Given an actor that accepts at most 10 KB
    @dramatiq.actor(queue_name="default", max_message_bytes=10_000, actor_name="small_messages_only")
    def small_messages_only(text: str) -> None:
        pass

    # When it is sent 20 KB / Then its own cap applies
    with pytest.raises(MessageTooLarge, match="small_messages_only"):
        small_messages_only.send("z" * 20_000)
    small_messages_only.send("z" * 1_000)
    broker.flush_all()

    # And a cap that is not a positive int is refused where the actor is declared
    with pytest.raises(ValueError, match="max_message_bytes"):

        @dramatiq.actor(queue_name="default", max_message_bytes="big", actor_name="bad_cap_actor")
        def bad_cap_actor() -> None:
            pass
