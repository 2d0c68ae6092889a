-- 001: identities (API keys, browser sessions) and presets with trigram search.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,          -- SHA-256 of the key; the key itself is never stored
    prefix      text NOT NULL,                  -- first characters, to recognise a key in listings
    user_id     text NOT NULL,
    org_id      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY,              -- SHA-256 of the cookie value
    key_id      bigint NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_key ON sessions (key_id);

CREATE TABLE presets (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     text NOT NULL,
    org_id      text,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    description text NOT NULL DEFAULT '',
    tags        text[] NOT NULL DEFAULT '{}',
    prompt      text NOT NULL CHECK (octet_length(prompt) <= 32768),
    parameters  jsonb NOT NULL DEFAULT '{}',
    -- lower(name || ' ' || tags), kept by the application: what search matches against.
    search_text text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    version     integer NOT NULL DEFAULT 1
);
-- Names are unique per user, ignoring case.
CREATE UNIQUE INDEX presets_user_name ON presets (user_id, lower(name));
-- Newest-first listing and its keyset pagination.
CREATE INDEX presets_user_created ON presets (user_id, created_at DESC, id DESC);
-- Fuzzy search scoped to one user: user_id equality and trigrams in one GIN index (btree_gin).
CREATE INDEX presets_user_search ON presets USING gin (user_id, search_text gin_trgm_ops);

-- Revoking a key or ending a session tells every node at once (they LISTEN and drop cached identities).
CREATE FUNCTION playground_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        PERFORM pg_notify('playground_auth', 'key:' || NEW.id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER api_keys_notify AFTER UPDATE ON api_keys FOR EACH ROW EXECUTE FUNCTION playground_notify_key();

CREATE FUNCTION playground_notify_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('playground_auth', 'session:' || encode(OLD.token_hash, 'hex'));
    RETURN OLD;
END $$;
CREATE TRIGGER sessions_notify AFTER DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION playground_notify_session();
