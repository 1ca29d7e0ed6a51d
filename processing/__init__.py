"""Plain Python that does the work. Nothing here imports dramatiq, actors, middleware or storage."""
