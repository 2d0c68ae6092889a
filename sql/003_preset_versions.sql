-- 003: every change of a preset is an immutable version (issue 19). A trigger keeps them, so
-- writes replayed from the outbox after an outage make versions like any other write. At most
-- the newest 100 versions of a preset are kept; they go with the preset.
CREATE TABLE preset_versions (
    preset_id   uuid NOT NULL REFERENCES presets (id) ON DELETE CASCADE,
    version     integer NOT NULL,
    name        text NOT NULL,
    description text NOT NULL,
    tags        text[] NOT NULL,
    prompt      text NOT NULL,
    parameters  jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (preset_id, version)
);

CREATE FUNCTION preset_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.version = OLD.version THEN
        RETURN NEW;
    END IF;
    INSERT INTO preset_versions (preset_id, version, name, description, tags, prompt, parameters, created_at)
    VALUES (NEW.id, NEW.version, NEW.name, NEW.description, NEW.tags, NEW.prompt, NEW.parameters, NEW.updated_at)
    ON CONFLICT (preset_id, version) DO NOTHING;
    DELETE FROM preset_versions WHERE preset_id = NEW.id AND version <= NEW.version - 100;
    RETURN NEW;
END
$$;

CREATE TRIGGER presets_keep_version AFTER INSERT OR UPDATE ON presets
    FOR EACH ROW EXECUTE FUNCTION preset_keep_version();

-- What exists already is its own first known version.
INSERT INTO preset_versions (preset_id, version, name, description, tags, prompt, parameters, created_at)
SELECT id, version, name, description, tags, prompt, parameters, updated_at FROM presets;
