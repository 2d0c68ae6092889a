-- 004: search that forgives typos (issue 19). Each preset keeps its words (name, tags and
-- description split into lowercased runs of letters and digits of 1–40 characters) and the words
-- of its name and tags alone (they weigh double); each user has a dictionary of the words of all
-- their presets with how many presets use each. A search reads the user's dictionary, expands
-- every query word to the dictionary words within its edit distance (in the application: optimal
-- string alignment, which PostgreSQL does not ship), and ranks the presets holding any of them
-- here, by a GIN index on (user_id, words). The trigram index on lower(name || tags) is gone:
-- trigram similarity cannot see one typo in a short word ("bse" for "base" scores 0.29).
-- Cost: each search reads the user's whole dictionary (an index-only range scan; ~170 words for
-- a user of 100 presets), so it grows with a user's distinct words.
-- The application splits text the same way (Domain/PresetSearch.swift, SearchWords.of): the
-- database must use a UTF-8 locale whose classes know letters beyond ASCII (C.UTF-8 does).

CREATE FUNCTION preset_search_words(doc text) RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(array_agg(DISTINCT w ORDER BY w), '{}')
    FROM regexp_split_to_table(lower(doc), '[^[:alnum:]]+') AS w
    WHERE length(w) BETWEEN 1 AND 40
$$;

ALTER TABLE presets
    ADD COLUMN title_words text[] NOT NULL DEFAULT '{}',
    ADD COLUMN words text[] NOT NULL DEFAULT '{}';

CREATE TABLE preset_words (
    user_id text NOT NULL,
    word    text NOT NULL,
    uses    integer NOT NULL,  -- presets of this user holding the word; the row goes at 0
    PRIMARY KEY (user_id, word)
);

-- Kept on every write, whichever path made it (API, import, restore, outbox replay).
CREATE FUNCTION preset_set_words() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.title_words := preset_search_words(NEW.name || ' ' || array_to_string(NEW.tags, ' '));
    NEW.words := preset_search_words(NEW.name || ' ' || array_to_string(NEW.tags, ' ') || ' ' || NEW.description);
    RETURN NEW;
END
$$;

CREATE TRIGGER presets_set_words BEFORE INSERT OR UPDATE OF name, tags, description ON presets
    FOR EACH ROW EXECUTE FUNCTION preset_set_words();

CREATE FUNCTION preset_count_words() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner text;
    added text[] := '{}';
    removed text[] := '{}';
BEGIN
    IF TG_OP = 'INSERT' THEN
        owner := NEW.user_id; added := NEW.words;
    ELSIF TG_OP = 'DELETE' THEN
        owner := OLD.user_id; removed := OLD.words;
    ELSE
        IF NEW.words = OLD.words THEN RETURN NULL; END IF;
        owner := NEW.user_id; added := NEW.words; removed := OLD.words;
    END IF;
    -- One statement, in word order: two single-preset writes of one user lock dictionary rows in
    -- the same order (no deadlock between them; the application writes one preset per statement
    -- and transaction — a statement writing several presets of one user could deadlock with another).
    INSERT INTO preset_words AS d (user_id, word, uses)
    SELECT owner, c.w, sum(c.n)::integer
    FROM (SELECT unnest(added) AS w, 1 AS n UNION ALL SELECT unnest(removed), -1) c
    GROUP BY c.w HAVING sum(c.n) <> 0
    ORDER BY c.w
    ON CONFLICT (user_id, word) DO UPDATE SET uses = d.uses + EXCLUDED.uses;
    DELETE FROM preset_words WHERE user_id = owner AND word = ANY(removed) AND uses <= 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER presets_count_words AFTER INSERT OR UPDATE OF name, tags, description OR DELETE ON presets
    FOR EACH ROW EXECUTE FUNCTION preset_count_words();

-- search_text is no longer written. It stays (nullable) for one release so nodes of the release
-- before can run beside these during a rolling upgrade (their searches find the presets they
-- wrote); a later migration drops it. Its trigram index goes first, so the backfill below does
-- not maintain it.
DROP INDEX presets_user_search;
ALTER TABLE presets ALTER COLUMN search_text DROP NOT NULL;

-- What exists already (the dictionary is built in one pass, not row by row).
ALTER TABLE presets DISABLE TRIGGER presets_count_words;
UPDATE presets SET name = name;
ALTER TABLE presets ENABLE TRIGGER presets_count_words;
INSERT INTO preset_words (user_id, word, uses)
SELECT user_id, w, count(*) FROM presets, unnest(words) AS w GROUP BY user_id, w;

CREATE INDEX presets_user_words ON presets USING gin (user_id, words);
