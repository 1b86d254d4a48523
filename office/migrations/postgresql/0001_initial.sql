-- The office's store, PostgreSQL with PostGIS. Times are ISO 8601 UTC text ending in Z (they sort as time).
CREATE TABLE sightings (
    event_id     TEXT PRIMARY KEY,       -- the unit's UUIDv7: a duplicate delivery is a no-op
    device       TEXT NOT NULL,
    captured_at  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    label        TEXT NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    lat          DOUBLE PRECISION,                   -- NULL: the unit had no GPS fix; no complaint then
    lon          DOUBLE PRECISION,
    accuracy_m   DOUBLE PRECISION,
    image_sha256 TEXT,
    crop_sha256  TEXT,
    complaint_id TEXT,
    event_json   TEXT NOT NULL
);
CREATE INDEX sightings_by_place ON sightings (label, lat, lon);
CREATE INDEX sightings_by_complaint ON sightings (complaint_id);
CREATE INDEX sightings_by_device ON sightings (device, captured_at);

-- Pictures may come before their event; `verified` once checked against its sha256.
CREATE TABLE pictures (
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('image', 'crop')),
    device      TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    data        BYTEA NOT NULL,
    received_at TEXT NOT NULL,
    verified    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, kind)
);

CREATE TABLE complaints (
    id           TEXT PRIMARY KEY,       -- the event id of the sighting that started it
    label        TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'new',
    lat          DOUBLE PRECISION NOT NULL,
    lon          DOUBLE PRECISION NOT NULL,
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    sightings    INTEGER NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    best_event   TEXT NOT NULL,
    vehicles     TEXT NOT NULL,          -- JSON list of device ids
    duplicate_of TEXT,
    follows      TEXT,                   -- the resolved complaint at this place before it
    resolved_at  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX complaints_by_place ON complaints (lat, lon);
CREATE INDEX complaints_by_status ON complaints (status, label);

CREATE TABLE complaint_history (
    n            BIGSERIAL PRIMARY KEY,
    complaint_id TEXT NOT NULL,
    status       TEXT NOT NULL,
    by_user      TEXT NOT NULL,
    at           TEXT NOT NULL,
    note         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX history_by_complaint ON complaint_history (complaint_id, n);

-- Complaints the office split apart: never merged again automatically.
CREATE TABLE kept_apart (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    PRIMARY KEY (a, b)
);

CREATE TABLE units (
    device            TEXT PRIMARY KEY,
    last_seen         TEXT NOT NULL,
    status_json       TEXT,
    telemetry_json    TEXT,
    telemetry_at      TEXT,
    config_json       TEXT,
    lat               DOUBLE PRECISION,
    lon               DOUBLE PRECISION,
    position_at       TEXT
);

CREATE TABLE bad_messages (
    reason      TEXT PRIMARY KEY,
    count       BIGINT NOT NULL,
    last_at     TEXT NOT NULL,
    last_topic  TEXT NOT NULL,
    last_detail TEXT NOT NULL
);

-- PostGIS: where complaints are looked up by distance (merging) and by area (the map).
CREATE EXTENSION IF NOT EXISTS postgis;
ALTER TABLE sightings ADD COLUMN geog geography(Point, 4326);
CREATE INDEX sightings_geog ON sightings USING GIST (geog);
ALTER TABLE complaints ADD COLUMN geog geography(Point, 4326);
CREATE INDEX complaints_geog ON complaints USING GIST (geog);

-- geog follows lat/lon, so that the store's code writes the same columns on both engines.
CREATE FUNCTION patrol_set_geog() RETURNS trigger AS $$
BEGIN
    NEW.geog := CASE WHEN NEW.lat IS NULL OR NEW.lon IS NULL THEN NULL
                ELSE ST_SetSRID(ST_MakePoint(NEW.lon, NEW.lat), 4326)::geography END;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER sightings_geog BEFORE INSERT OR UPDATE OF lat, lon ON sightings
    FOR EACH ROW EXECUTE FUNCTION patrol_set_geog();
CREATE TRIGGER complaints_geog BEFORE INSERT OR UPDATE OF lat, lon ON complaints
    FOR EACH ROW EXECUTE FUNCTION patrol_set_geog();
