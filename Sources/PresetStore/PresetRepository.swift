import Domain
import JSON

/// Every preset query. Each one is scoped by user_id: another user's preset is simply not found.
public enum PresetRepository {
    static let columns = """
        id::text, user_id, name, description, array_to_json(tags)::text, prompt, parameters::text,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), version
        """
    /// What search matches against, computed the same way on every write.
    static let searchText = "lower(name || ' ' || array_to_string(tags, ' '))"

    public enum WriteError: Error, Sendable { case conflict, notFound, database(PGError) }

    static func preset(_ r: [String?]) -> Preset {
        let tags = (try? JSONParser.parse(r[4] ?? "[]"))?.arrayValue?.compactMap(\.stringValue) ?? []
        let params = (try? JSONParser.parse(r[6] ?? "{}"))?.objectValue ?? JSONObject()
        return Preset(id: r[0] ?? "", userID: r[1] ?? "", name: r[2] ?? "", description: r[3] ?? "", tags: tags, prompt: r[5] ?? "",
                      parameters: params, createdAt: r[7] ?? "", updatedAt: r[8] ?? "", version: Int(r[9] ?? "1") ?? 1)
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

    /// A syntactically valid UUID (anything else cannot name a preset: not found, never a SQL error).
    public static func isUUID(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count == 36 else { return false }
        for (i, c) in u.enumerated() {
            if [8, 13, 18, 23].contains(i) { if c != UInt8(ascii: "-") { return false } } else if hexValue(c) == nil { return false }
        }
        return true
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }

    public static func create(_ conn: PGConnection, user: Identity, fields f: PresetFields) throws(PGError) -> Result<Preset, WriteError> {
        do throws(PGError) {
            let rows = try conn.query("""
                INSERT INTO presets (user_id, org_id, name, description, tags, prompt, parameters, search_text)
                SELECT $1, $2, $3, $4, t.tags, $6, $7::jsonb, lower($3 || ' ' || array_to_string(t.tags, ' '))
                FROM (SELECT ARRAY(SELECT jsonb_array_elements_text($5::jsonb)) AS tags) t
                RETURNING \(columns)
                """, [user.userID, user.orgID, f.name ?? "", f.description ?? "", json(f.tags ?? []), f.prompt ?? "",
                      json(f.parameters ?? JSONObject())])
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

    public static func update(_ conn: PGConnection, user: Identity, id: String, fields f: PresetFields) throws(PGError) -> Result<Preset, WriteError> {
        guard isUUID(id) else { return .failure(.notFound) }
        do throws(PGError) {
            let rows = try conn.query("""
                UPDATE presets SET
                    name = COALESCE($3, name),
                    description = COALESCE($4, description),
                    tags = COALESCE(ARRAY(SELECT jsonb_array_elements_text($5::jsonb)), tags),
                    prompt = COALESCE($6, prompt),
                    parameters = COALESCE($7::jsonb, parameters),
                    search_text = lower(COALESCE($3, name) || ' ' ||
                        array_to_string(COALESCE(ARRAY(SELECT jsonb_array_elements_text($5::jsonb)), tags), ' ')),
                    version = version + 1,
                    updated_at = clock_timestamp()
                WHERE id = $1::uuid AND user_id = $2
                RETURNING \(columns)
                """, [id, user.userID, f.name, f.description, f.tags.map(json), f.prompt, f.parameters.map(json)])
            return rows.count == 1 ? .success(preset(rows.rows[0])) : .failure(.notFound)
        } catch {
            if error.isUniqueViolation { return .failure(.conflict) }
            throw error
        }
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

    /// Newest first for an empty query; otherwise substring matches and near misses over name and
    /// tags, best first by trigram word similarity. Keyset pagination: the cursor names the last
    /// row's sort key, so rows added meanwhile never shift a page (no duplicates, no gaps).
    /// The search statement and its bound parameters; nil for a cursor this query did not issue.
    public static func searchStatement(user: Identity, query q: String, limit: Int, cursor: String?) -> (String, [String?])? {
        let decoded = cursor.map(SearchCursor.decode)
        if let d = decoded, d == nil { return nil }
        let c = decoded ?? nil
        if q.isEmpty {
            if let c, c.kind != "t" { return nil }
            return ("""
                SELECT \(columns), NULL FROM presets
                WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2::timestamptz, $3::uuid))
                ORDER BY created_at DESC, presets.id DESC LIMIT $4
                """, [user.userID, c?.key, c?.id, "\(limit + 1)"])
        } else {
            if let c, c.kind != "s" { return nil }
            // Every word of the query must match the preset (as a substring, or nearly: trigram word
            // similarity); the score is the words' mean similarity, plus 1 per exact substring.
            // Words are bound parameters; LIKE patterns have their own %, _ and \ escaped, so they are
            // searched for literally.
            var words: [String] = []
            for w in q.split(whereSeparator: { $0.isWhitespace }) where words.count < 8 && !words.contains(String(w)) { words.append(String(w)) }
            var params: [String?] = [user.userID, c?.key, c?.id, "\(limit + 1)"]
            var conditions: [String] = []
            var scores: [String] = []
            for w in words {
                let like = "%" + w.replacingAll("\\", with: "\\\\").replacingAll("%", with: "\\%").replacingAll("_", with: "\\_") + "%"
                params.append(w)
                let wp = "$\(params.count)"
                params.append(like)
                let lp = "$\(params.count)"
                conditions.append("(search_text LIKE \(lp) ESCAPE '\\' OR \(wp) <% search_text)")
                scores.append("word_similarity(\(wp), search_text) + CASE WHEN search_text LIKE \(lp) ESCAPE '\\' THEN 1 ELSE 0 END")
            }
            return ("""
                SELECT * FROM (
                    SELECT \(columns), ((\(scores.joined(separator: " + "))) / \(words.count))::real AS score
                    FROM presets
                    WHERE user_id = $1 AND \(conditions.joined(separator: " AND "))
                ) s
                WHERE ($2::real IS NULL OR (score, id::uuid) < ($2::real, $3::uuid))
                ORDER BY score DESC, id::uuid DESC LIMIT $4
                """, params)
        }
    }

    public static func search(_ conn: PGConnection, user: Identity, query: String, limit: Int, cursor: String?) throws(PGError) -> Result<Page, SearchError> {
        let q = query.trimmingWhitespace().lowercased()
        guard let (sql, params) = searchStatement(user: user, query: q, limit: limit, cursor: cursor) else { return .failure(.badCursor) }
        let rows = try conn.query(sql, params)
        let items = rows.rows.prefix(limit).map { r in (preset(r), r[10].flatMap(Double.init)) }
        var next: String?
        if rows.count > limit, let last = rows.rows.prefix(limit).last {
            next = q.isEmpty ? SearchCursor(kind: "t", key: last[7] ?? "", id: last[0] ?? "").encoded
                             : SearchCursor(kind: "s", key: last[10] ?? "0", id: last[0] ?? "").encoded
        }
        return .success(Page(items: items, nextCursor: next))
    }
}

/// An opaque pagination cursor: the sort key and id of the last row of a page.
struct SearchCursor {
    let kind: String  // "t": created_at (listing), "s": score (search)
    let key: String
    let id: String

    var encoded: String { Credentials.base64url(Array("\(kind)|\(key)|\(id)".utf8)) }

    static func decode(_ s: String) -> SearchCursor? {
        guard s.utf8.count <= 200, let bytes = base64urlDecode(s) else { return nil }
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "t" || parts[0] == "s", PresetRepository.isUUID(String(parts[2])) else { return nil }
        let key = String(parts[1])
        if parts[0] == "s" { guard Double(key) != nil else { return nil } } else {
            // 2026-11-30T22:16:19.123456Z
            guard key.utf8.count == 27, key.utf8.allSatisfy({ ($0 >= 48 && $0 <= 58) || $0 == 45 || $0 == 46 || $0 == 84 || $0 == 90 }) else { return nil }
        }
        return SearchCursor(kind: String(parts[0]), key: key, id: String(parts[2]))
    }

    static func base64urlDecode(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var acc: UInt32 = 0, bits = 0
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 65...90: v = UInt32(c - 65)
            case 97...122: v = UInt32(c - 71)
            case 48...57: v = UInt32(c + 4)
            case UInt8(ascii: "-"): v = 62
            case UInt8(ascii: "_"): v = 63
            default: return nil
            }
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return out
    }
}
