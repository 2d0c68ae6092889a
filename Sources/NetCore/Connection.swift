import CLinux
import Runtime
#if canImport(Glibc)
import Glibc
#endif

/// What a protocol layer plugs into a `Connection`. All calls happen on the connection's loop.
public protocol ConnectionHandler: AnyObject {
    /// New bytes. `bytes` is the loop's shared read buffer: valid only during this call, and the
    /// handler may modify it in place (the WebSocket codec unmasks there).
    func connectionRead(_ connection: Connection, _ bytes: UnsafeMutableRawBufferPointer)
    /// The peer closed its side or the connection failed. No more reads follow.
    func connectionClosed(_ connection: Connection, error: SystemError?)
}

/// A non-blocking TCP socket on one loop with a bounded outbound buffer.
///
/// Writes go straight to the socket when nothing is queued ("flush on produce"); what the kernel
/// does not take is queued and written when epoll reports the socket writable. While a read is
/// being handled, writes are held and flushed together at the end of that read: they were produced
/// in the same instant, so coalescing them adds no delay. A peer that lets more than
/// `maxOutboundBytes` pile up is too slow and is disconnected.
public final class Connection: Pollable {
    public let fd: Int32
    // Strong: a connection (or a closure holding one) may outlive its loop's group in teardown;
    // the cycle with the loop's registration table ends when the connection deregisters or the
    // loop stops.
    public let loop: EventLoop
    public var handler: ConnectionHandler?
    public var maxOutboundBytes: Int
    /// Opaque slot for the protocol layer's per-connection state (e.g. request counters).
    public var userData: AnyObject?

    private var outbound = ByteBuffer()
    private var wantWrite = false
    private var readingPaused = false
    private var inRead = false
    private var closeAfterFlush = false
    private var lingering = false
    private var lingerTimer: TimerHandle?
    public private(set) var isOpen = true
    public private(set) var isConnecting = false
    private var connectCallback: ((Connection, SystemError?) -> Void)?

    public var pendingOutboundBytes: Int { outbound.readableBytes }

    init(fd: Int32, loop: EventLoop, maxOutboundBytes: Int) {
        self.fd = fd
        self.loop = loop
        self.maxOutboundBytes = maxOutboundBytes
    }

    /// Registers an accepted socket with its loop.
    static func accepted(fd: Int32, loop: EventLoop, maxOutboundBytes: Int) throws(SystemError) -> Connection {
        let c = Connection(fd: fd, loop: loop, maxOutboundBytes: maxOutboundBytes)
        try? Posix.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        try loop.register(fd: fd, c, events: EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
        loop.connectionCount += 1
        return c
    }

    /// Opens a client connection (used by the load generator and tests). `source` binds a local
    /// address first so many clients can spread over 127.0.0.x; with port 0 the port is chosen at
    /// connect time.
    public static func connect(to address: SocketAddress, from source: SocketAddress? = nil, loop: EventLoop,
                               maxOutboundBytes: Int = 1 << 20,
                               _ done: @escaping (Connection, SystemError?) -> Void) throws(SystemError) -> Connection {
        let fd = try Posix.tcpSocket()
        do {
            if let source {
                if source.port == 0 {
                    // Let connect() choose the port (per destination), not bind().
                    try Posix.setOption(fd, Int32(IPPROTO_IP), IP_BIND_ADDRESS_NO_PORT, 1)
                } else {
                    // An explicit port skips the kernel's port search (much faster for many connects).
                    try Posix.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
                }
                try Posix.bind(fd, source)
            }
            try? Posix.setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
            let immediate = try Posix.connect(fd, address)
            let c = Connection(fd: fd, loop: loop, maxOutboundBytes: maxOutboundBytes)
            c.isConnecting = !immediate
            c.connectCallback = done
            try loop.register(fd: fd, c, events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue)
            loop.connectionCount += 1
            c.wantWrite = true
            return c
        } catch {
            Posix.close(fd)
            throw error
        }
    }

    // MARK: writing

    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard isOpen, !closeAfterFlush else { return }
        if outbound.isEmpty && !inRead && !isConnecting && !loop.writesDeferred {
            var off = 0
            while off < bytes.count {
                switch writeSome(bytes.baseAddress! + off, bytes.count - off) {
                case .processed(let n): off += n
                case .wouldBlock:
                    enqueue(UnsafeRawBufferPointer(rebasing: bytes[off...]))
                    return
                case nil: return
                }
            }
        } else {
            enqueue(bytes)
        }
    }

    public func write(_ bytes: [UInt8]) { bytes.withUnsafeBytes { write($0) } }
    public func write(_ buffer: ByteBuffer) { buffer.withReadableBytes { write($0) } }
    public func write(_ string: String) {
        var s = string
        s.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    private func enqueue(_ bytes: UnsafeRawBufferPointer) {
        outbound.append(bytes)
        if outbound.readableBytes > maxOutboundBytes {
            // A reader too slow to keep up: drop it rather than grow without bound.
            abort(error: SystemError("outbound buffer over \(maxOutboundBytes) bytes", ENOBUFS))
            return
        }
        if loop.writesDeferred && !inRead {
            if !deferredFlushPending {
                deferredFlushPending = true
                loop.deferredFlushes.append(self)
            }
        } else if !inRead && !isConnecting {
            setWantWrite(true)
        }
    }

    private var deferredFlushPending = false

    /// Called by the loop at the end of a `deferringWrites` block.
    func flushDeferred() {
        deferredFlushPending = false
        flush()
    }

    /// Writes what is queued; called after a read and when epoll reports writability.
    public func flush() {
        guard isOpen, !isConnecting else { return }
        while !outbound.isEmpty {
            let r: IOResult? = outbound.withReadableBytes { writeSome($0.baseAddress!, $0.count) }
            switch r {
            case .processed(let n): outbound.consume(n)
            case .wouldBlock: setWantWrite(true); return
            case nil: return
            }
        }
        setWantWrite(false)
        if closeAfterFlush { finishClose() }
    }

    /// nil: the connection failed and has been closed.
    private func writeSome(_ p: UnsafeRawPointer, _ n: Int) -> IOResult? {
        do { return try Posix.write(fd, p, n) } catch {
            abort(error: error)
            return nil
        }
    }

    private func setWantWrite(_ on: Bool) {
        guard on != wantWrite, isOpen else { return }
        wantWrite = on
        updateInterest()
    }

    private func updateInterest() {
        var ev: UInt32 = EPOLLRDHUP.rawValue
        if !readingPaused { ev |= EPOLLIN.rawValue }
        if wantWrite { ev |= EPOLLOUT.rawValue }
        try? loop.modify(fd: fd, events: ev)
    }

    // MARK: reading

    public func pauseReading() {
        guard !readingPaused, isOpen else { return }
        readingPaused = true
        updateInterest()
    }

    public func resumeReading() {
        guard readingPaused, isOpen, !lingering else { return }
        readingPaused = false
        updateInterest()
    }

    public func handleEvents(_ events: UInt32) {
        if isConnecting {
            if events & (EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { finishConnect() }
            return
        }
        if events & (EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            readAvailable()
        }
        if isOpen && events & EPOLLOUT.rawValue != 0 {
            flush()
        }
    }

    private func finishConnect() {
        isConnecting = false
        let err = Posix.socketError(fd)
        let cb = connectCallback
        connectCallback = nil
        if err != 0 {
            let e = SystemError("connect", err)
            cb?(self, e)
            abort(error: e)
            return
        }
        cb?(self, nil)
        flush()
        if outbound.isEmpty { setWantWrite(false) }
    }

    private func readAvailable() {
        let buf = loop.readBuffer
        // A few reads per event keeps one busy peer from starving the rest of the loop.
        for _ in 0..<4 {
            guard isOpen, !readingPaused || lingering else { return }
            let r: IOResult
            do { r = try Posix.read(fd, buf.baseAddress!, buf.count) } catch {
                abort(error: error)
                return
            }
            switch r {
            case .wouldBlock:
                return
            case .processed(0):
                peerClosed()
                return
            case .processed(let n):
                if lingering { continue }
                inRead = true
                handler?.connectionRead(self, UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
                inRead = false
                if isOpen { flush() }
                if n < buf.count { return }
            }
        }
    }

    private func peerClosed() {
        if lingering { finishLinger(); return }
        abort(error: nil)
    }

    // MARK: closing

    /// Closes once queued bytes are written. Then the write side is shut and the read side drained
    /// briefly ("lingering close", RFC 9112 §9.6) so the peer reads our final response instead of a reset.
    public func close(afterFlush: Bool = true) {
        guard isOpen else { return }
        if !afterFlush { abort(error: nil); return }
        closeAfterFlush = true
        if !inRead { flush() }
    }

    private func finishClose() {
        guard isOpen, !lingering else { return }
        lingering = true
        Posix.shutdownWrite(fd)
        readingPaused = false
        wantWrite = false
        updateInterest()
        lingerTimer = loop.schedule(afterNanos: 2_000_000_000) { [weak self] in self?.finishLinger() }
        notifyClosed(error: nil)
    }

    private func finishLinger() {
        lingerTimer?.cancel()
        lingerTimer = nil
        release()
    }

    /// Closes at once, dropping anything queued.
    public func abort(error: SystemError?) {
        guard isOpen else { return }
        if lingering { release(); return }
        notifyClosed(error: error)
        release()
    }

    private var closedNotified = false
    private func notifyClosed(error: SystemError?) {
        guard !closedNotified else { return }
        closedNotified = true
        let h = handler
        h?.connectionClosed(self, error: error)
    }

    private func release() {
        guard isOpen else { return }
        isOpen = false
        loop.deregister(fd: fd)
        Posix.close(fd)
        outbound.clear()
        handler = nil
        userData = nil
        lingerTimer?.cancel()
        lingerTimer = nil
        // A connection that failed while connecting still owes its creator an answer.
        if let cb = connectCallback {
            connectCallback = nil
            cb(self, SystemError("connect", ECONNRESET))
        }
        loop.connectionCount -= 1
    }
}
