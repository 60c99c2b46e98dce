"""Alembic migrations of the alert history (collector/alertstore.py), applied by AlertStore.migrate.

A package so that setuptools ships it with the collector. To change the
schema, change the models in alertstore.py and add the next script in
versions/ (from script.py.mako: the next revision number, down_revision the
previous one). tests/collector/test_alertstore.py fails until the migrated
schema matches the models, on SQLite and on PostgreSQL.
"""
