// The only file that touches libssl. A TLS client session over memory BIOs: the caller moves
// ciphertext between the session and its (non-blocking, event-loop) connection, so TLS needs no
// socket of its own and no thread. Certificate and host name verification are on, always.
internal import CSSL

public struct TLSError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ d: String) { description = d }
}

/// Trust and protocol settings shared by the sessions to one upstream.
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    /// `caFile`: a PEM bundle to trust instead of the system's store.
    public init(caFile: String?) throws(TLSError) {
        // The context is stored only once it is complete: a throwing initializer whose stored
        // properties are all set runs `deinit`, which would free it a second time.
        guard let c = SSL_CTX_new(TLS_client_method()) else { throw TLSError("cannot create a TLS context") }
        _ = playground_ctx_min_tls12(c)
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nil)
        if let caFile {
            guard SSL_CTX_load_verify_locations(c, caFile, nil) == 1 else {
                let why = TLSSession.lastError()
                SSL_CTX_free(c)
                throw TLSError("cannot load the CA file \(caFile): \(why)")
            }
        } else if SSL_CTX_set_default_verify_paths(c) != 1 {
            SSL_CTX_free(c)
            throw TLSError("cannot load the system's trusted certificates")
        }
        ctx = c
    }

    deinit { SSL_CTX_free(ctx) }
}

/// One TLS connection's state, driven by its owner: `start` → send what it returns; on bytes
/// from the peer → `receive`, send `outgoing`, use the plaintext; `seal` plaintext to send.
public final class TLSSession {
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer  // ciphertext from the peer, for OpenSSL to read
    private let wbio: OpaquePointer  // ciphertext OpenSSL wrote, for us to send
    public private(set) var handshakeDone = false
    let host: String

    public init(context: TLSContext, host: String) throws(TLSError) {
        // As in TLSContext: every failure frees what was made and throws before a stored
        // property is set, so `deinit` never sees a half-made session.
        guard let s = SSL_new(context.ctx) else { throw TLSError("cannot create a TLS session") }
        guard let r = BIO_new(BIO_s_mem()) else { SSL_free(s); throw TLSError("out of memory") }
        guard let w = BIO_new(BIO_s_mem()) else { _ = BIO_free(r); SSL_free(s); throw TLSError("out of memory") }
        SSL_set_bio(s, r, w)  // the session owns both BIOs now: SSL_free frees them
        SSL_set_connect_state(s)
        // Verify the name the URL gave: an IP address against the certificate's IP entries, a
        // name against its DNS names (and sent as SNI).
        if TLSSession.isIPv4(host) {
            let param = SSL_get0_param(s)
            guard X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1 else { SSL_free(s); throw TLSError("bad IP address \(host)") }
        } else {
            guard SSL_set1_host(s, host) == 1, playground_ssl_set_sni(s, host) == 1 else { SSL_free(s); throw TLSError("bad host name \(host)") }
        }
        ssl = s
        rbio = r
        wbio = w
        self.host = host
    }

    deinit { SSL_free(ssl) }

    static func isIPv4(_ h: String) -> Bool {
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isNumber) }
    }

    /// Starts the handshake; the bytes to send.
    public func start() throws(TLSError) -> [UInt8] {
        try handshake()
        return outgoing()
    }

    /// Feeds ciphertext from the peer; plaintext (if any) goes to `plaintext`. Afterwards send
    /// `outgoing()` (handshake replies, alerts).
    public func receive(_ bytes: UnsafeRawBufferPointer, plaintext: (UnsafeRawBufferPointer) -> Void) throws(TLSError) {
        var off = 0
        while off < bytes.count {
            let n = BIO_write(rbio, bytes.baseAddress! + off, Int32(bytes.count - off))
            guard n > 0 else { throw TLSError("TLS buffer refused input") }
            off += Int(n)
        }
        if !handshakeDone { try handshake() }
        guard handshakeDone else { return }
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if n > 0 {
                buf.withUnsafeBytes { plaintext(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)])) }
                continue
            }
            let e = SSL_get_error(ssl, n)
            if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return }
            if e == SSL_ERROR_ZERO_RETURN { return }  // close_notify: the connection's end says the rest
            throw TLSError("TLS read failed: \(TLSSession.lastError())")
        }
    }

    /// Encrypts plaintext; the ciphertext to send.
    public func seal(_ bytes: [UInt8]) throws(TLSError) -> [UInt8] {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + off, Int32($0.count - off)) }
            guard n > 0 else { throw TLSError("TLS write failed: \(TLSSession.lastError())") }
            off += Int(n)
        }
        return outgoing()
    }

    /// Ciphertext waiting to be sent.
    public func outgoing() -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = buf.withUnsafeMutableBytes { BIO_read(wbio, $0.baseAddress, Int32($0.count)) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<Int(n)])
        }
        return out
    }

    private func handshake() throws(TLSError) {
        let r = SSL_do_handshake(ssl)
        if r == 1 { handshakeDone = true; return }
        let e = SSL_get_error(ssl, r)
        if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return }
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            let why = String(cString: X509_verify_cert_error_string(verify))
            throw TLSError("the certificate of \(host) is not trusted: \(why)")
        }
        throw TLSError("TLS handshake with \(host) failed: \(TLSSession.lastError())")
    }

    static func lastError() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, 256)
            parts.append(buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return parts.isEmpty ? "unknown error" : parts.joined(separator: "; ")
    }
}
