-- Endpoints that answered 410 Gone: nothing more is sent to them until an operator
-- enables them again (src/store/endpoints.rs). Every bridge sharing the store agrees.
CREATE TABLE disabled_endpoints (
    url         TEXT PRIMARY KEY,
    disabled_at BIGINT NOT NULL,
    reason      TEXT NOT NULL
);

-- One row a probe writes while the store is failing (src/store/health.rs): whether the
-- store takes writes again when no webhook comes.
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL
);
