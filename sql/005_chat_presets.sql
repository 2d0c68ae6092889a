-- 005: chat presets (issue 19). A preset runs as one prompt (mode 'completion', as before) or as
-- messages (mode 'chat': a system prompt and user/assistant turns, run on /v1/chat/completions).
-- Versions keep both.
ALTER TABLE presets
    ADD COLUMN mode text NOT NULL DEFAULT 'completion' CHECK (mode IN ('completion', 'chat')),
    ADD COLUMN messages jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(messages) = 'array');
ALTER TABLE preset_versions
    ADD COLUMN mode text NOT NULL DEFAULT 'completion',
    ADD COLUMN messages jsonb NOT NULL DEFAULT '[]';

CREATE OR REPLACE FUNCTION preset_keep_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.version = OLD.version THEN
        RETURN NEW;
    END IF;
    INSERT INTO preset_versions (preset_id, version, name, description, tags, prompt, parameters, created_at, mode, messages)
    VALUES (NEW.id, NEW.version, NEW.name, NEW.description, NEW.tags, NEW.prompt, NEW.parameters, NEW.updated_at, NEW.mode, NEW.messages)
    ON CONFLICT (preset_id, version) DO NOTHING;
    DELETE FROM preset_versions WHERE preset_id = NEW.id AND version <= NEW.version - 100;
    RETURN NEW;
END
$$;
