import Domain
import JSON

/// Every preset query. Each one is scoped by user_id: another user's preset is simply not found.
public enum PresetRepository {
    static let columns = """
        id::text, user_id, name, description, array_to_json(tags)::text, prompt, parameters::text,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), version, mode, messages::text
        """

    public enum WriteError: Error, Sendable { case conflict, notFound, database(PGError) }

    static func preset(_ r: [String?]) -> Preset {
        let tags = (try? JSONParser.parse(r[4] ?? "[]"))?.arrayValue?.compactMap(\.stringValue) ?? []
        let params = (try? JSONParser.parse(r[6] ?? "{}"))?.objectValue ?? JSONObject()
        var p = Preset(id: r[0] ?? "", userID: r[1] ?? "", name: r[2] ?? "", description: r[3] ?? "", tags: tags, prompt: r[5] ?? "",
                      parameters: params, createdAt: r[7] ?? "", updatedAt: r[8] ?? "", version: Int(r[9] ?? "1") ?? 1)
        p.mode = r[10].flatMap(PresetMode.init(rawValue:)) ?? .completion
        p.messages = ChatTurn.read(try? JSONParser.parse(r[11] ?? "[]"))
        return p
    }

    static func json(_ tags: [String]) -> String {
        var w = JSONWriter()
        w.beginArray(); for t in tags { w.string(t) }; w.endArray()
        return w.string
    }

    static func json(_ o: JSONObject) -> String {
        var w = JSONWriter()
        w.value(.object(o))
        return w.string
    }

    public static func isUUID(_ s: String) -> Bool { UUIDText.isValid(s) }

    /// Inserts a preset. `id` and `at` are given by the caller when the write was accepted
    /// earlier (the outbox) or must be safe to repeat (a timed-out insert retried through the
    /// outbox finds its id taken and knows it happened).
    public static func create(_ conn: PGConnection, user: Identity, fields f: PresetFields, id: String? = nil,
                              at: String? = nil) throws(PGError) -> Result<Preset, WriteError> {
        do throws(PGError) {
            let rows = try conn.query("""
                INSERT INTO presets (id, user_id, org_id, name, description, tags, prompt, parameters, created_at, updated_at, mode, messages)
                SELECT COALESCE($8::uuid, gen_random_uuid()), $1, $2, $3, $4, t.tags, $6, $7::jsonb,
                       COALESCE($9::timestamptz, clock_timestamp()), COALESCE($9::timestamptz, clock_timestamp()), $10, $11::jsonb
                FROM (SELECT ARRAY(SELECT jsonb_array_elements_text($5::jsonb)) AS tags) t
                RETURNING \(columns)
                """, [user.userID, user.orgID, f.name ?? "", f.description ?? "", json(f.tags ?? []), f.prompt ?? "",
                      json(f.parameters ?? JSONObject()), id, at, (f.mode ?? .completion).rawValue, ChatTurn.json(f.messages ?? [])])
            return .success(preset(rows.rows[0]))
        } catch {
            if error.isUniqueViolation { return .failure(.conflict) }
            throw error
        }
    }

    public static func get(_ conn: PGConnection, user: Identity, id: String) throws(PGError) -> Preset? {
        guard isUUID(id) else { return nil }
        let rows = try conn.query("SELECT \(columns) FROM presets WHERE id = $1::uuid AND user_id = $2", [id, user.userID])
        return rows.count == 1 ? preset(rows.rows[0]) : nil
    }

    /// The row as a PATCH would leave it (what is not given stays): compared with the row as it
    /// is, so a PATCH that changes nothing makes no version (100 of them would push the real
    /// history out).
    static let patched = """
        (COALESCE($3, name), COALESCE($4, description),
         CASE WHEN $5::jsonb IS NULL THEN tags ELSE ARRAY(SELECT jsonb_array_elements_text($5::jsonb)) END,
         COALESCE($6, prompt), COALESCE($7::jsonb, parameters), COALESCE($8, mode), COALESCE($9::jsonb, messages))
        IS DISTINCT FROM (name, description, tags, prompt, parameters, mode, messages)
        """

    public static func update(_ conn: PGConnection, user: Identity, id: String, fields f: PresetFields) throws(PGError) -> Result<Preset, WriteError> {
        guard isUUID(id) else { return .failure(.notFound) }
        do throws(PGError) {
            let rows = try conn.query("""
                UPDATE presets SET
                    name = COALESCE($3, name),
                    description = COALESCE($4, description),
                    -- ARRAY(subquery) is never NULL (no tags given → '{}'), so test the parameter itself.
                    tags = CASE WHEN $5::jsonb IS NULL THEN tags ELSE ARRAY(SELECT jsonb_array_elements_text($5::jsonb)) END,
                    prompt = COALESCE($6, prompt),
                    parameters = COALESCE($7::jsonb, parameters),
                    mode = COALESCE($8, mode),
                    messages = COALESCE($9::jsonb, messages),
                    version = version + CASE WHEN \(patched) THEN 1 ELSE 0 END,
                    updated_at = CASE WHEN \(patched) THEN clock_timestamp() ELSE updated_at END
                WHERE id = $1::uuid AND user_id = $2
                RETURNING \(columns)
                """, [id, user.userID, f.name, f.description, f.tags.map(json), f.prompt, f.parameters.map(json), f.mode?.rawValue,
                      f.messages.map(ChatTurn.json)])
            return rows.count == 1 ? .success(preset(rows.rows[0])) : .failure(.notFound)
        } catch {
            if error.isUniqueViolation { return .failure(.conflict) }
            throw error
        }
    }

    /// A version as a `Preset` (its id, content, `version`, and `created_at` = `updated_at` = when it was made).
    static let versionColumns = """
        v.preset_id::text, p.user_id, v.name, v.description, array_to_json(v.tags)::text, v.prompt, v.parameters::text,
        to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), v.version, v.mode, v.messages::text
        """

    /// The preset's versions newest first, older than `before` if given; nil: not this user's preset.
    public static func versions(_ conn: PGConnection, user: Identity, id: String, limit: Int, before: Int?) throws(PGError) -> [Preset]? {
        guard isUUID(id) else { return nil }
        guard try conn.query("SELECT 1 FROM presets WHERE id = $1::uuid AND user_id = $2", [id, user.userID]).count == 1 else { return nil }
        let rows = try conn.query("""
            SELECT \(versionColumns) FROM preset_versions v JOIN presets p ON p.id = v.preset_id
            WHERE v.preset_id = $1::uuid AND p.user_id = $2 AND ($3::int IS NULL OR v.version < $3::int)
            ORDER BY v.version DESC LIMIT $4
            """, [id, user.userID, before.map(String.init), "\(limit)"])
        return rows.rows.map(preset)
    }

    /// One version of the user's preset, or nil.
    public static func version(_ conn: PGConnection, user: Identity, id: String, number: Int) throws(PGError) -> Preset? {
        guard isUUID(id) else { return nil }
        let rows = try conn.query("""
            SELECT \(versionColumns) FROM preset_versions v JOIN presets p ON p.id = v.preset_id
            WHERE v.preset_id = $1::uuid AND p.user_id = $2 AND v.version = $3::int
            """, [id, user.userID, String(number)])
        return rows.count == 1 ? preset(rows.rows[0]) : nil
    }

    public static func delete(_ conn: PGConnection, user: Identity, id: String) throws(PGError) -> Bool {
        guard isUUID(id) else { return false }
        return try conn.query("DELETE FROM presets WHERE id = $1::uuid AND user_id = $2", [id, user.userID]).affected == 1
    }

    public struct Page: Sendable {
        public let items: [(preset: Preset, score: Double?)]
        public let nextCursor: String?
    }

    public enum SearchError: Error, Sendable { case badCursor, database(PGError) }

    /// Newest first for an empty query; otherwise typo-tolerant search (Domain's `SearchQuery`):
    /// the user's dictionary is read, the query's words expanded to its words, and the presets
    /// holding any of them ranked here by `SearchScore`'s arithmetic. Keyset pagination: the
    /// cursor names the last row's sort key, so rows added meanwhile never shift a page.
    /// The statement and its bound parameters, continuing after `c` (checked by the caller:
    /// `SearchCursor.continuing`).
    public static func searchStatement(user: Identity, query: SearchQuery?, expansions: [SearchQuery.Expansion], limit: Int,
                                       after c: SearchCursor?) -> (String, [String?]) {
        guard let q = query else {
            return ("""
                SELECT \(columns), NULL FROM presets
                WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
                ORDER BY created_at DESC, presets.id DESC LIMIT $4
                """, [user.userID, c?.key, c?.id, "\(limit + 1)"])
        }
        // Arrays are bound as text literals; every element is quoted and escaped.
        func array(_ xs: [String]) -> String {
            "{" + xs.map { "\"" + $0.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
        }
        let document = "lower(p.name || ' ' || array_to_string(p.tags, ' ') || ' ' || p.description)"
        let params: [String?] = [user.userID, c?.key, c?.id, "\(limit + 1)",
                                 array(expansions.map(\.word)), array(expansions.map { "\($0.unit)" }), array(expansions.map { "\($0.points)" }),
                                 array(q.literals), array(q.phrases)]
        // Candidates: the user's presets holding an expanded word (the GIN index), or all of them
        // when the query has literal tokens (`%`) to look for. Score: SearchScore.of, in SQL.
        return ("""
            SELECT * FROM (
                SELECT \(columns), (
                    SELECT COALESCE(sum(\(SearchScore.perUnit) + m.best), 0) FROM (
                        SELECT max(CASE WHEN e.w = ANY(p.title_words) THEN 2 * e.pts ELSE e.pts END) AS best
                        FROM unnest($5::text[], $6::int[], $7::int[]) AS e(w, u, pts)
                        JOIN unnest(p.words) AS pw(w) ON pw.w = e.w
                        GROUP BY e.u
                        UNION ALL
                        SELECT \(SearchQuery.Points.literal) FROM unnest($8::text[]) AS l(t) WHERE strpos(\(document), l.t) > 0
                    ) m
                ) + (SELECT count(*) FROM unnest($9::text[]) AS f(t) WHERE strpos(\(document), f.t) > 0) AS score
                FROM presets p
                WHERE p.user_id = $1 AND (p.words && $5::text[] OR cardinality($8::text[]) > 0)
                OFFSET 0  -- (keeps the score computed once per row, not again for the filter and the sort)
            ) s
            WHERE score >= \(SearchScore.perUnit) AND ($2::int IS NULL OR (score, id::uuid) < ($2::int, $3::uuid))
            ORDER BY score DESC, id::uuid DESC LIMIT $4
            """, params)
    }

    /// The user's dictionary (every word of their presets).
    public static func dictionary(_ conn: PGConnection, user: Identity) throws(PGError) -> [String] {
        try conn.query("SELECT word FROM preset_words WHERE user_id = $1", [user.userID]).rows.compactMap { $0[0] }
    }

    public static func search(_ conn: PGConnection, user: Identity, query: String, limit: Int, cursor: String?) throws(PGError) -> Result<Page, SearchError> {
        let q = SearchQuery(query)
        // The cursor is checked before anything is read.
        let after: SearchCursor?
        do { after = try SearchCursor.continuing(cursor, kind: q == nil ? "t" : "f") } catch { return .failure(.badCursor) }
        var expansions: [SearchQuery.Expansion] = []
        if let q, !q.words.isEmpty { expansions = q.expansions(dictionary: try dictionary(conn, user: user)) }
        let (sql, params) = searchStatement(user: user, query: q, expansions: expansions, limit: limit, after: after)
        let rows = try conn.query(sql, params)
        let items = rows.rows.prefix(limit).map { r in (preset(r), r[12].flatMap(Int.init).map(SearchScore.display)) }
        var next: String?
        if rows.count > limit, let last = rows.rows.prefix(limit).last {
            next = q == nil ? SearchCursor(kind: "t", key: last[7] ?? "", id: last[0] ?? "").encoded
                            : SearchCursor(kind: "f", key: last[12] ?? "0", id: last[0] ?? "").encoded
        }
        return .success(Page(items: items, nextCursor: next))
    }
}


// MARK: the outbox's writes

extension PresetRepository {
    public enum QueuedOutcome: Sendable {
        /// Applied now; the preset as the database has it (nil after a delete).
        case applied(Preset?)
        /// Its idempotency key was recorded before: applied (or failed) earlier; nothing done now.
        case duplicate
        /// Could not be applied any more; kept (failed) for its owner to see.
        case failed(code: String, message: String)
    }

    /// Applies one queued write exactly once: its idempotency key and the write commit together,
    /// so a write delivered again (the replayer died before acknowledging it) finds its key and
    /// does nothing. A failure to reach the database throws (nothing committed; try again later).
    public static func applyQueued(_ conn: PGConnection, _ w: PresetWrite) throws(PGError) -> QueuedOutcome {
        var fieldsJSON = JSONWriter()
        w.fields.write(&fieldsJSON)
        try conn.query("BEGIN")
        do throws(PGError) {
            let claimed = try conn.query("""
                INSERT INTO preset_writes (idempotency_key, user_id, op, preset_id, fields, queued_at, outcome)
                VALUES ($1::uuid, $2, $3, $4::uuid, $5::jsonb, $6::timestamptz, 'applying')
                ON CONFLICT (idempotency_key) DO NOTHING
                """, [w.key, w.userID, w.op.rawValue, w.presetID, fieldsJSON.string, w.queuedAt]).affected
            if claimed == 0 {
                try conn.query("ROLLBACK")
                return .duplicate
            }
            try conn.query("SAVEPOINT write")
            let user = Identity(userID: w.userID, orgID: w.orgID, keyID: 0)
            var outcome: QueuedOutcome
            do throws(PGError) {
                switch w.op {
                case .create:
                    if let existing = try get(conn, user: user, id: w.presetID) {
                        // A direct insert that timed out had in fact been committed.
                        outcome = .applied(existing)
                    } else {
                        switch try create(conn, user: user, fields: w.fields, id: w.presetID, at: w.queuedAt) {
                        case .success(let p): outcome = .applied(p)
                        case .failure: outcome = .failed(code: "conflict", message: "another preset of yours is named '\(w.fields.name ?? "")' now")
                        }
                    }
                case .update:
                    switch try update(conn, user: user, id: w.presetID, fields: w.fields) {
                    case .success(let p): outcome = .applied(p)
                    case .failure(.conflict): outcome = .failed(code: "conflict", message: "another preset of yours is named '\(w.fields.name ?? "")' now")
                    case .failure(.database(let e)): throw e
                    case .failure: outcome = .failed(code: "not_found", message: "the preset was deleted before this change could be saved")
                    }
                case .delete:
                    // Gone either way: the goal of the write holds.
                    _ = try delete(conn, user: user, id: w.presetID)
                    outcome = .applied(nil)
                }
            } catch where !error.isUnavailable {
                outcome = .failed(code: "invalid", message: error.message)
            }
            if case .failed = outcome { try conn.query("ROLLBACK TO SAVEPOINT write") }
            let (code, message): (String, String?) = {
                if case .failed(let c, let m) = outcome { return (c, m) }
                return ("applied", nil)
            }()
            try conn.query("UPDATE preset_writes SET outcome = $2, message = $3, applied_at = clock_timestamp() WHERE idempotency_key = $1::uuid",
                           [w.key, code, message])
            try conn.query("COMMIT")
            return outcome
        } catch {
            if conn.isHealthy { _ = try? conn.query("ROLLBACK") }
            throw error
        }
    }

    public struct FailedWrite: Sendable {
        public let write: PresetWrite
        public let code: String
        public let message: String
        public let failedAt: String
    }

    /// The user's writes that could not be applied and were not dismissed, oldest first.
    public static func failedWrites(_ conn: PGConnection, user: Identity) throws(PGError) -> [FailedWrite] {
        let rows = try conn.query("""
            SELECT idempotency_key::text, op, preset_id::text, fields::text,
                   to_char(queued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), outcome, coalesce(message, ''),
                   to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            FROM preset_writes WHERE user_id = $1 AND outcome <> 'applied' AND NOT dismissed ORDER BY applied_at LIMIT 1000
            """, [user.userID])
        return rows.rows.compactMap { r in
            guard let op = r[1].flatMap(PresetWrite.Op.init(rawValue:)) else { return nil }
            let fields = (try? JSONParser.parse(r[3] ?? "{}"))?.objectValue ?? JSONObject()
            let w = PresetWrite(key: r[0] ?? "", op: op, presetID: r[2] ?? "", userID: user.userID, orgID: user.orgID,
                                fields: PresetFields(json: fields), queuedAt: r[4] ?? "")
            return FailedWrite(write: w, code: r[5] ?? "", message: r[6] ?? "", failedAt: r[7] ?? "")
        }
    }

    /// Hides a failed write from its owner's list; false if there is no such failed write.
    public static func dismissFailedWrite(_ conn: PGConnection, user: Identity, key: String) throws(PGError) -> Bool {
        guard isUUID(key) else { return false }
        return try conn.query("""
            UPDATE preset_writes SET dismissed = true
            WHERE idempotency_key = $1::uuid AND user_id = $2 AND outcome <> 'applied' AND NOT dismissed
            """, [key, user.userID]).affected == 1
    }

    /// Applied writes' keys are kept a week: long past any redelivery.
    public static func pruneAppliedWrites(_ conn: PGConnection) throws(PGError) -> Int {
        try conn.query("DELETE FROM preset_writes WHERE outcome = 'applied' AND applied_at < now() - interval '7 days'").affected
    }
}

// MARK: the database splits words as the application does

extension PresetRepository {
    /// Text whose words only a UTF-8 locale with Unicode classes splits and lowercases as
    /// `SearchWords.of` does (C.UTF-8 does; the C locale does not).
    static let wordsProbe = "İstanbul CAFÉ Ǆemal x² ΣΑΣ 日本語 हिन्दी"

    /// nil if the database's `preset_search_words()` agrees with `SearchWords.of`; else what each
    /// said (search then misses non-ASCII words, and the cache's degraded search disagrees).
    public static func wordsDisagreement(_ conn: PGConnection) throws(PGError) -> String? {
        let r = try conn.query("""
            SELECT array_to_json(preset_search_words($1))::text, current_setting('lc_ctype')
            """, [wordsProbe])
        let json = r.rows.first?[0] ?? "[]"
        let db = (try? JSONParser.parse(json))?.arrayValue?.compactMap(\.stringValue) ?? []
        let mine = SearchWords.of(wordsProbe)
        guard Set(db) != Set(mine) else { return nil }
        return "lc_ctype \(r.rows.first?[1] ?? "?") splits '\(wordsProbe)' into \(db), the application into \(mine)"
    }
}
