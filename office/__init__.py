"""patrol-office: the other end of the wire.

A collector takes every unit's findings, pictures and health off the broker
(``collector.py``), keeps them idempotently by event id in SQLite or PostgreSQL
with PostGIS (``store.py``), merges findings of one object into one complaint
(``complaints.py``) and serves the map page, GeoJSON, CSV and Open311 GeoReport v2
(``web.py``, ``open311.py``). It shares only the MQTT contract (docs/mqtt.md) with
the agent, never the agent's modules.
"""

__version__ = "0.1.0"
