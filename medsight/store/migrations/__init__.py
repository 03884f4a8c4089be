"""Alembic migrations of the store's schema; applied by ``medsight.store.db.upgrade_schema``."""
