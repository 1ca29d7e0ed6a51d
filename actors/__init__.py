"""Every actor of the platform. Importing this package builds the broker and registers all actors, so
``dramatiq actors`` (or ``dramatiq actors -Q media``) just works.

Domain modules import their heavy libraries lazily, inside the processing functions they call, so a
worker that serves only the ``documents`` queue never loads Whisper.
"""

from __future__ import annotations

import importlib
import logging

from broker import setup_broker

broker = setup_broker()

#: Domain modules, imported in this order; a module that is not there yet is skipped.
DOMAIN_MODULES = ("maintenance", "documents", "media", "market")

for _name in DOMAIN_MODULES:
    try:
        importlib.import_module(f"actors.{_name}")
    except ModuleNotFoundError as error:
        if error.name != f"actors.{_name}":
            raise
        logging.getLogger(__name__).debug("Actor module %s is not installed.", _name)
