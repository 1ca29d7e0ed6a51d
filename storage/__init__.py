"""SQLAlchemy models, sessions and migrations."""
