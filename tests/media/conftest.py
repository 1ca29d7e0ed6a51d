"""Media test fixtures: clips made with espeak-ng and ffmpeg, and a local HTTP server that serves them.

Nothing here touches the internet: every URL points at 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from samples.media.make_clip import SENTENCE, make_clip
from tests.media.media_server import MediaServer

CLIP_SECONDS = 8


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media-clips")


@pytest.fixture(scope="session")
def speech_clip(clip_dir: Path) -> Path:
    """An 8-second MP4: espeak-ng speaking ``SENTENCE`` over ffmpeg's test picture."""
    return make_clip(clip_dir / "speech.mp4", duration_seconds=CLIP_SECONDS)


@pytest.fixture(scope="session")
def sentence() -> str:
    return SENTENCE


@pytest.fixture
def media_server(tmp_path: Path, loopback_allowed: None) -> Iterator[MediaServer]:
    """An HTTP server on 127.0.0.1 serving the files a test puts in ``server.root`` (with Range support)."""
    root = tmp_path / "www"
    root.mkdir()
    server = MediaServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed_port(loopback_allowed: None) -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def in_storage(storage_root: Path) -> Iterator[Path]:
    """A folder under the storage root for this test's local media, removed afterwards."""
    import uuid

    folder = storage_root / "media-tests" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
