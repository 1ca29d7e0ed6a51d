"""Media sources through yt-dlp: metadata, captions, downloads, playlists; local files the same way.

A source is a URL (YouTube or anything else yt-dlp's extractors understand, including a direct link to
a media file) or a path under the storage root. Every source takes the same steps:

1. ``fetch_metadata``: title, channel, duration, upload date, caption tracks, size. For a direct link
   whose duration yt-dlp cannot tell, ffprobe reads the header over HTTP; a local file is probed.
2. ``check_limits``: the duration and size caps, before a byte of media is downloaded.
3. ``choose_captions`` / ``fetch_captions``: a caption track in the preferred language, manual before
   automatic, parsed into timed segments.
4. ``download_media``: the audio (or audio and video when frames are wanted) with a progress hook that
   also enforces the size cap while bytes arrive. A local file is used in place.

Errors: bad input raises a ``processing.errors.PermanentError`` subclass (never retried), a passing
network fault (timeout, HTTP 5xx) raises ``MediaFetchError`` (retried).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processing import netguard
from processing.captions import SUPPORTED_FORMATS, parse_captions
from processing.errors import InvalidArgument, NotFound, TooLarge, UnsupportedFormat
from processing.frames import MediaProbe, probe_media
from processing.paths import resolve_under
from processing.transcription import Segment

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, "str | None"], None]

#: Format selectors: audio alone when only a transcript is needed; a modest video with audio for frames.
AUDIO_FORMAT = "bestaudio/best"
VIDEO_FORMAT = "bv*[height<=?720]+ba/b[height<=?720]/bv*+ba/b"


class SourceUnreachable(NotFound):
    """The host refused the connection or does not exist, or the server answered 4xx."""


class MediaFetchError(Exception):
    """A network fault that may pass (timeout, reset, HTTP 5xx): the job is retried."""


@dataclass(frozen=True)
class CaptionTrack:
    """One caption file offered for a video: language code, format, URL, and whether YouTube made it."""

    language: str
    ext: str
    url: str
    automatic: bool
    name: str | None = None


@dataclass
class MediaInfo:
    """What is known about a source before anything is downloaded. Durations in seconds, sizes in bytes."""

    source: str
    id: str
    title: str | None
    channel: str | None
    duration: float | None
    upload_date: str | None
    webpage_url: str | None
    extractor: str
    filesize: int | None
    has_video: bool | None
    captions: list[CaptionTrack] = field(default_factory=list)
    local_path: Path | None = None
    is_live: bool = False
    raw: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def as_dict(self) -> dict[str, Any]:
        """Metadata as plain data (what the videos table keeps)."""
        return {
            "source": self.source,
            "id": self.id,
            "title": self.title,
            "channel": self.channel,
            "duration": self.duration,
            "upload_date": self.upload_date,
            "webpage_url": self.webpage_url,
            "extractor": self.extractor,
            "filesize": self.filesize,
            "has_video": self.has_video,
            "captions": sorted({f"{t.language}{' (auto)' if t.automatic else ''}" for t in self.captions}),
        }


@dataclass(frozen=True)
class PlaylistEntry:
    """One video of a playlist, as the flat listing gives it (no per-video request made yet)."""

    position: int
    url: str
    id: str | None
    title: str | None
    duration: float | None


@dataclass
class Playlist:
    url: str
    id: str | None
    title: str | None
    entries: list[PlaylistEntry]


def is_url(source: str) -> bool:
    """True for ``scheme://...`` sources (``file://`` is refused: local files are given as paths)."""
    return "://" in source


class _YdlLogger:
    """Sends yt-dlp's messages to our log instead of stdout/stderr."""

    def debug(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        logger.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        logger.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        logger.info("yt-dlp: %s", msg)


def _ydl_options(**extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YdlLogger(),
        "noplaylist": True,
        "socket_timeout": 30,
        "retries": 3,
        "fragment_retries": 3,
        "extractor_retries": 1,
        "cachedir": False,
        "color": {"stdout": "never", "stderr": "never"},
    }
    options.update(extra)
    return options


@contextmanager
def _ydl(**extra: Any) -> Iterator[Any]:
    """A quiet ``YoutubeDL`` with our options; wrap its calls in ``_run_ydl`` to translate errors."""
    import yt_dlp

    with netguard.guarded(), yt_dlp.YoutubeDL(_ydl_options(**extra)) as ydl:
        yield ydl


def _translate_error(exc: BaseException, source: str) -> BaseException:
    """Map a yt-dlp error onto a permanent error (bad input) or ``MediaFetchError`` (retry)."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import DownloadError, ExtractorError, UnsupportedError

    cause: BaseException | None = exc
    if isinstance(exc, DownloadError) and exc.exc_info and exc.exc_info[1] is not None:
        cause = exc.exc_info[1]
    while isinstance(cause, ExtractorError) and cause.orig_msg and cause.cause is not None:
        cause = cause.cause
    message = str(getattr(exc, "msg", None) or exc).removeprefix("ERROR: ").strip()
    if isinstance(cause, UnsupportedError) or "Unsupported URL" in message:
        return UnsupportedFormat(f"{source!r} is not a media page or file yt-dlp can read")
    if isinstance(cause, HTTPError):
        if 400 <= cause.status < 500 and cause.status not in (408, 429):
            return SourceUnreachable(f"{source!r} answered HTTP {cause.status} {cause.reason or ''}".strip())
        return MediaFetchError(f"{source!r} answered HTTP {cause.status}; will try again")
    if isinstance(cause, TransportError):
        text = str(cause)
        if any(s in text for s in ("Connection refused", "Name or service not known", "nodename nor servname")):
            reason = "connection refused" if "refused" in text else "unknown host"
            return SourceUnreachable(f"cannot reach {source!r}: {reason}")
        return MediaFetchError(f"network error fetching {source!r}: {text}")
    if isinstance(cause, ExtractorError) and cause.expected:
        return NotFound(f"{source!r}: {message}")
    return MediaFetchError(f"fetching {source!r} failed: {message}")


def _run_ydl(source: str, call: Callable[[], Any]) -> Any:
    from yt_dlp.utils import DownloadError, ExtractorError

    try:
        return call()
    except (DownloadError, ExtractorError, OSError) as exc:
        refused = netguard.refusal()
        if refused is not None:
            raise netguard.AddressRefused(f"refusing to fetch {source!r}: {refused}") from None
        if isinstance(exc, OSError):
            raise
        raise _translate_error(exc, source) from exc


def fetch_metadata(
    source: str,
    *,
    storage_root: Path,
    with_video: bool = False,
    probe_timeout_seconds: float = 60.0,
) -> MediaInfo:
    """Describe ``source`` without downloading its media.

    ``with_video`` picks the formats a later ``download_media`` fetches (and whose size is checked).
    """
    if not isinstance(source, str) or not source.strip():
        raise InvalidArgument("the media source must be a non-empty URL or path")
    source = source.strip()
    if not is_url(source):
        return _local_metadata(source, storage_root)
    scheme = source.split("://", 1)[0].lower()
    if scheme not in {"http", "https"}:
        raise InvalidArgument(f"unsupported URL scheme {scheme!r}: give an http(s) URL or a path")

    options = {"format": VIDEO_FORMAT if with_video else AUDIO_FORMAT}
    with _ydl(**options) as ydl:
        # Extract first without resolving anything, so a playlist is recognised before its entries
        # are visited; then pick the formats of the single video.
        unresolved = _run_ydl(source, lambda: ydl.extract_info(source, download=False, process=False))
        if unresolved is None:
            raise NotFound(f"{source!r} gave no video")
        if unresolved.get("_type") in {"playlist", "multi_video"} or "entries" in unresolved:
            raise InvalidArgument(f"{source!r} is a playlist; submit it as a playlist")
        raw = _run_ydl(source, lambda: ydl.process_ie_result(unresolved, download=False))
    if raw is None:
        raise NotFound(f"{source!r} gave no video")

    info = MediaInfo(
        source=source,
        id=str(raw.get("id") or raw.get("display_id") or "media"),
        title=raw.get("title"),
        channel=raw.get("channel") or raw.get("uploader"),
        duration=float(raw["duration"]) if raw.get("duration") else None,
        upload_date=raw.get("upload_date"),
        webpage_url=raw.get("webpage_url") or source,
        extractor=str(raw.get("extractor_key") or raw.get("extractor") or "unknown").lower(),
        filesize=_selected_size(raw),
        has_video=_selected_has_video(raw),
        captions=_caption_tracks(raw),
        is_live=bool(raw.get("is_live")),
        raw=raw,
    )
    if info.is_live:
        raise UnsupportedFormat(f"{source!r} is a live stream; only recorded media can be processed")

    selected = raw.get("requested_formats") or [raw]
    direct_url = selected[0].get("url") if len(selected) == 1 else None
    protocol = str(selected[0].get("protocol") or "")
    if direct_url and protocol in {"http", "https"} and (info.duration is None or info.filesize is None):
        # yt-dlp knows nothing about a bare file's length: read its header over HTTP, not the file.
        headers = selected[0].get("http_headers") or raw.get("http_headers") or None
        netguard.check_url(direct_url)  # ffprobe connects by itself, outside the guard
        probe = probe_media(direct_url, timeout_seconds=probe_timeout_seconds, headers=headers)
        info.duration = info.duration or probe.duration
        info.filesize = info.filesize or probe.size
        if info.has_video is None:
            info.has_video = probe.has_video
    return info


def _local_metadata(source: str, storage_root: Path) -> MediaInfo:
    path = resolve_under(storage_root, source)
    if not path.is_file():
        raise NotFound(f"{source!r} is not a file")
    probe: MediaProbe = probe_media(path)
    return MediaInfo(
        source=source,
        id=path.stem,
        title=path.stem,
        channel=None,
        duration=probe.duration,
        upload_date=None,
        webpage_url=None,
        extractor="local",
        filesize=path.stat().st_size,
        has_video=probe.has_video,
        local_path=path,
    )


def _selected_size(raw: dict[str, Any]) -> int | None:
    formats = raw.get("requested_formats") or [raw]
    total = 0
    for fmt in formats:
        size = fmt.get("filesize") or fmt.get("filesize_approx")
        if not size:
            return None
        total += int(size)
    return total


def _selected_has_video(raw: dict[str, Any]) -> bool | None:
    formats = raw.get("requested_formats") or [raw]
    codecs = [fmt.get("vcodec") for fmt in formats]
    if any(c not in (None, "none") for c in codecs):
        return True
    if all(c == "none" for c in codecs):
        return False
    return None


def _caption_tracks(raw: dict[str, Any]) -> list[CaptionTrack]:
    tracks: list[CaptionTrack] = []
    for key, automatic in (("subtitles", False), ("automatic_captions", True)):
        for language, entries in (raw.get(key) or {}).items():
            for entry in entries or []:
                url, ext = entry.get("url"), str(entry.get("ext") or "").lower()
                if url and ext:
                    tracks.append(CaptionTrack(language, ext, url, automatic, entry.get("name")))
    return tracks


def check_limits(info: MediaInfo, *, max_seconds: float, max_bytes: int) -> None:
    """Refuse media over the duration or size cap (``TooLarge``) before anything is downloaded."""
    if info.duration is not None and max_seconds and info.duration > max_seconds:
        raise TooLarge(
            f"{info.title or info.source!r} lasts {_hms(info.duration)}, over the limit of {_hms(max_seconds)}"
        )
    if info.filesize is not None and max_bytes and info.filesize > max_bytes:
        raise TooLarge(
            f"{info.title or info.source!r} is {info.filesize / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB"
        )


def _hms(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _language_rank(code: str, preferred: str) -> int | None:
    """0 for the exact language, 1 for a regional or original variant (``en-US``, ``en-orig``)."""
    code, preferred = code.lower(), preferred.lower()
    if code == preferred:
        return 0
    if code.split("-")[0] == preferred.split("-")[0]:
        return 1
    return None


def choose_captions(tracks: list[CaptionTrack], language: str) -> CaptionTrack | None:
    """The best caption track in ``language``: manual before automatic, then json3 before VTT.

    YouTube offers automatic captions translated into every language; those are labelled with the
    source language in the name ("English (auto-generated)" is the original, the rest are machine
    translations), and an original is preferred over a translation.
    """
    best: tuple[tuple[int, int, int, int], CaptionTrack] | None = None
    for track in tracks:
        if track.ext not in SUPPORTED_FORMATS:
            continue
        rank = _language_rank(track.language, language)
        if rank is None:
            continue
        translated = 1 if track.automatic and "tlang=" in track.url else 0
        key = (int(track.automatic), translated, rank, SUPPORTED_FORMATS.index(track.ext))
        if best is None or key < best[0]:
            best = (key, track)
    return best[1] if best else None


def fetch_captions(track: CaptionTrack, *, max_bytes: int = 10_000_000) -> list[Segment]:
    """Download one caption track through yt-dlp's HTTP stack and parse it into segments.

    The body is read up to ``max_bytes``: a caption track is text, and a server that sends more is
    refused rather than read into memory.
    """
    with _ydl() as ydl:
        body = _run_ydl(track.url, lambda: ydl.urlopen(track.url).read(max_bytes + 1))
    if len(body) > max_bytes:
        raise TooLarge(f"the {track.language} captions are over the limit of {max_bytes / 1e6:.1f} MB")
    text = body.decode("utf-8-sig", errors="replace") if isinstance(body, bytes) else str(body)
    return parse_captions(text, track.ext)


def download_media(
    info: MediaInfo,
    dest_dir: Path,
    *,
    with_video: bool = False,
    max_bytes: int = 0,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Download the media of ``info`` into ``dest_dir`` and return the file; a local file is returned as is.

    The size cap is enforced again while bytes arrive (a server may not say the size up front). On any
    failure the partial files are removed. The file is probed afterwards, so a truncated or non-media
    download fails here with a readable reason.
    """
    if info.local_path is not None:
        if on_progress is not None:
            on_progress(100.0, "local file")
        return info.local_path
    if info.raw is None:
        raise InvalidArgument("media info without yt-dlp data cannot be downloaded; fetch it again")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    expected = len(info.raw.get("requested_formats") or [info.raw])
    done: list[str] = []

    def hook(status: dict[str, Any]) -> None:
        downloaded = int(status.get("downloaded_bytes") or 0)
        total = status.get("total_bytes") or status.get("total_bytes_estimate")
        if max_bytes and (downloaded > max_bytes or (total and int(total) > max_bytes)):
            size = int(total) if total else downloaded
            raise TooLarge(
                f"{info.title or info.source!r} is over the download limit of {max_bytes / 1e6:.1f} MB "
                f"({size / 1e6:.1f} MB {'announced' if total else 'so far'})"
            )
        if status.get("status") == "finished":
            done.append(str(status.get("filename")))
        if on_progress is None:
            return
        part = len(done) if status.get("status") == "finished" else len(done) + (downloaded / total if total else 0)
        note = f"downloaded {downloaded / 1e6:.1f} MB"
        if total:
            note += f" of {int(total) / 1e6:.1f} MB"
        with netguard.unguarded():
            on_progress(min(100.0, 100.0 * part / expected), note)

    options = {
        "format": VIDEO_FORMAT if with_video else AUDIO_FORMAT,
        "paths": {"home": str(dest_dir), "temp": str(dest_dir)},
        "outtmpl": {"default": "%(id).80B.%(ext)s"},
        "progress_hooks": [hook],
        "overwrites": True,
        "continuedl": False,
        "merge_output_format": "mkv",
    }
    try:
        with _ydl(**options) as ydl:
            result = _run_ydl(info.source, lambda: ydl.process_ie_result(dict(info.raw or {}), download=True))
        downloads = (result or {}).get("requested_downloads") or []
        path = Path(downloads[0]["filepath"]) if downloads and downloads[0].get("filepath") else None
        if path is None or not path.is_file():
            raise MediaFetchError(f"yt-dlp finished without a file for {info.source!r}")
        probe = probe_media(path)
        if with_video and info.has_video is not False and not probe.has_video:
            info.has_video = False
        if max_bytes and path.stat().st_size > max_bytes:
            raise TooLarge(f"{info.source!r} is over the download limit of {max_bytes / 1e6:.1f} MB")
    except BaseException:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise
    if on_progress is not None:
        on_progress(100.0, "download done")
    return path


def expand_playlist(url: str) -> Playlist:
    """List a playlist's videos without visiting each one (yt-dlp's flat extraction)."""
    from yt_dlp.utils import unsmuggle_url

    if not isinstance(url, str) or not is_url(url.strip()):
        raise InvalidArgument("a playlist must be given as an http(s) URL")
    url = url.strip()
    with _ydl(extract_flat="in_playlist", noplaylist=False) as ydl:
        raw = _run_ydl(url, lambda: ydl.extract_info(url, download=False))
    if raw is None or (raw.get("_type") != "playlist" and "entries" not in raw):
        raise InvalidArgument(f"{url!r} is a single video, not a playlist")
    entries: list[PlaylistEntry] = []
    for position, entry in enumerate(raw.get("entries") or [], start=1):
        if not entry:
            continue
        entry_url = entry.get("url") or entry.get("webpage_url")
        if not entry_url:
            continue
        clean_url, _ = unsmuggle_url(entry_url, {})
        if not is_url(clean_url) and entry.get("ie_key") == "Youtube":
            clean_url = f"https://www.youtube.com/watch?v={clean_url}"
        entries.append(
            PlaylistEntry(
                position=position,
                url=clean_url,
                id=entry.get("id"),
                title=entry.get("title"),
                duration=float(entry["duration"]) if entry.get("duration") else None,
            )
        )
    return Playlist(url=url, id=raw.get("id"), title=raw.get("title"), entries=entries)
