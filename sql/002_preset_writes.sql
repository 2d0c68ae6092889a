-- 002: writes accepted while the database was down (the Redis outbox) are applied exactly once.
-- Each carries an idempotency key, recorded here in the same transaction as the write itself; a
-- write that could not be applied any more (its name was taken meanwhile, the preset was deleted)
-- stays here, failed, for its owner to see (GET /v1/presets/pending) until dismissed.
CREATE TABLE preset_writes (
    idempotency_key uuid PRIMARY KEY,
    user_id     text NOT NULL,
    op          text NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    preset_id   uuid NOT NULL,
    fields      jsonb NOT NULL DEFAULT '{}',
    queued_at   timestamptz NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    outcome     text NOT NULL,               -- applied | conflict | not_found | invalid
    message     text,
    dismissed   boolean NOT NULL DEFAULT false
);
CREATE INDEX preset_writes_failed ON preset_writes (user_id, applied_at) WHERE outcome <> 'applied' AND NOT dismissed;
CREATE INDEX preset_writes_applied_at ON preset_writes (applied_at) WHERE outcome = 'applied';
