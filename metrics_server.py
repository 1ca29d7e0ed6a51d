"""The process that answers Prometheus's scrape of a worker command: every worker process's metrics (the
multiprocess folder), the broker's queue depths and the live workers.

The ``Metrics`` middleware runs ``serve_from_fork`` as a Dramatiq fork process (``broker.py`` hands it in),
so ``dramatiq actors`` and ``python -m worker actors`` serve ``http://METRICS_HOST:METRICS_PORT/metrics``.
It lives here, not in the middleware, because it needs the broker and the actors the middleware must not
import.
"""

from __future__ import annotations

import logging
import os
import threading
from http.server import ThreadingHTTPServer

from middleware.metrics import BrokerCollector, make_server, use_multiprocess_dir
from settings import settings

logger = logging.getLogger(__name__)


def serve_metrics(
    host: str | None = None, port: int | None = None, *, directory: str | None = None, block: bool = True
) -> ThreadingHTTPServer:
    """Serve the metrics over HTTP; with ``block=False`` in a daemon thread, returning the server."""
    import dramatiq

    from broker import queue_depths, redis_client_for

    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or str(settings.metrics_dir)
    use_multiprocess_dir(directory)
    broker = dramatiq.get_broker()
    client = redis_client_for(broker)
    collector = BrokerCollector(client, lambda: queue_depths(broker)) if client is not None else None
    server = make_server(
        host or settings.metrics_host, settings.metrics_port if port is None else port, directory, collector
    )
    if block:
        server.serve_forever()
    else:
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def serve_from_fork() -> int:
    """The fork process's entry point: build the broker, then serve until the command stops."""
    import actors  # noqa: F401  (builds the broker this process reads queue depths from)

    logger.info("Serving metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    try:
        serve_metrics()
    except OSError as error:
        logger.error(
            "Metrics server could not listen on %s:%d: %s", settings.metrics_host, settings.metrics_port, error
        )
        return 1
    return 0
