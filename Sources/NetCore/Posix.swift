// Every raw syscall NetCore makes lives in this file. EINTR is retried here, EAGAIN becomes a
// would-block result, and EBADF/EFAULT trap: they only happen when our own bookkeeping is wrong.
import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// A failed syscall with its errno, safe to log.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let errno: Int32
    public init(_ call: String, _ errno: Int32) { self.call = call; self.errno = errno }
    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// Result of a non-blocking read or write.
public enum IOResult: Equatable {
    case processed(Int)
    case wouldBlock
}

enum Posix {
    @inline(__always)
    static func checkProgrammerError(_ call: String, _ err: Int32) {
        precondition(err != EBADF && err != EFAULT, "\(call) failed with \(err): NetCore bookkeeping bug")
    }

    @inline(__always)
    static func retrying(_ call: String, _ body: () -> Int) throws(SystemError) -> Int {
        while true {
            let r = body()
            if r >= 0 { return r }
            let err = clinux_errno()
            if err == EINTR { continue }
            checkProgrammerError(call, err)
            throw SystemError(call, err)
        }
    }

    static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int) throws(SystemError) -> IOResult {
        while true {
            let r = Glibc.read(fd, buf, count)
            if r >= 0 { return .processed(r) }
            let err = clinux_errno()
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK { return .wouldBlock }
            checkProgrammerError("read", err)
            throw SystemError("read", err)
        }
    }

    static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int) throws(SystemError) -> IOResult {
        while true {
            // MSG_NOSIGNAL: a peer that went away is an error return, not a SIGPIPE.
            let r = Glibc.send(fd, buf, count, Int32(MSG_NOSIGNAL))
            if r >= 0 { return .processed(r) }
            let err = clinux_errno()
            if err == EINTR { continue }
            if err == EAGAIN || err == EWOULDBLOCK { return .wouldBlock }
            checkProgrammerError("send", err)
            throw SystemError("send", err)
        }
    }

    static func close(_ fd: Int32) {
        // Linux closes the descriptor even when close() reports EINTR: never retry.
        _ = Glibc.close(fd)
    }

    static func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    static func setNonBlocking(_ fd: Int32) throws(SystemError) {
        let flags = clinux_fcntl_getfl(fd)
        if flags < 0 { throw SystemError("fcntl(F_GETFL)", clinux_errno()) }
        if clinux_fcntl_setfl(fd, flags | O_NONBLOCK) < 0 { throw SystemError("fcntl(F_SETFL)", clinux_errno()) }
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws(SystemError) {
        var v = value
        if setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) < 0 {
            throw SystemError("setsockopt(\(level),\(name))", clinux_errno())
        }
    }

    static func socketError(_ fd: Int32) -> Int32 {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 { return clinux_errno() }
        return err
    }

    static func tcpSocket() throws(SystemError) -> Int32 {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError("socket", clinux_errno()) }
        return fd
    }

    static func bind(_ fd: Int32, _ address: SocketAddress) throws(SystemError) {
        var sa = address.storage
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 { throw SystemError("bind(\(address))", clinux_errno()) }
    }

    static func listen(_ fd: Int32, backlog: Int32) throws(SystemError) {
        if Glibc.listen(fd, backlog) < 0 { throw SystemError("listen", clinux_errno()) }
    }

    /// Starts a non-blocking connect; true when it completed at once.
    static func connect(_ fd: Int32, _ address: SocketAddress) throws(SystemError) -> Bool {
        var sa = address.storage
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r == 0 { return true }
        let err = clinux_errno()
        if err == EINPROGRESS || err == EINTR { return false }
        throw SystemError("connect(\(address))", err)
    }

    /// Accepts one connection; nil when the queue is empty.
    static func accept(_ fd: Int32) throws(SystemError) -> Int32? {
        while true {
            let r = clinux_accept4(fd, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if r >= 0 { return r }
            let err = clinux_errno()
            if err == EINTR || err == ECONNABORTED { continue }
            if err == EAGAIN || err == EWOULDBLOCK { return nil }
            checkProgrammerError("accept4", err)
            throw SystemError("accept4", err)
        }
    }

    static func localAddress(_ fd: Int32) throws(SystemError) -> SocketAddress {
        var sa = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let r = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        if r < 0 { throw SystemError("getsockname", clinux_errno()) }
        return SocketAddress(storage: sa)
    }

    // epoll / eventfd
    static func epollCreate() throws(SystemError) -> Int32 {
        let fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        if fd < 0 { throw SystemError("epoll_create1", clinux_errno()) }
        return fd
    }

    static func epollCtl(_ epfd: Int32, _ op: Int32, _ fd: Int32, events: UInt32, data: UInt64) throws(SystemError) {
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = data
        if epoll_ctl(epfd, op, fd, &ev) < 0 { throw SystemError("epoll_ctl(\(op))", clinux_errno()) }
    }

    static func epollWait(_ epfd: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ max: Int32, timeoutMs: Int32) throws(SystemError) -> Int {
        let r = epoll_wait(epfd, events, max, timeoutMs)
        if r >= 0 { return Int(r) }
        let err = clinux_errno()
        if err == EINTR { return 0 }
        throw SystemError("epoll_wait", err)
    }

    static func eventfdCreate() throws(SystemError) -> Int32 {
        let fd = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        if fd < 0 { throw SystemError("eventfd", clinux_errno()) }
        return fd
    }

    static func eventfdSignal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)  // EAGAIN means the counter is already non-zero: fine.
    }

    static func eventfdDrain(_ fd: Int32) {
        var v: UInt64 = 0
        _ = Glibc.read(fd, &v, 8)
    }
}

/// An IPv4 socket address. (IPv6 can join later; the product listens on loopback or behind a balancer.)
public struct SocketAddress: CustomStringConvertible, Sendable {
    var storage: sockaddr_in

    init(storage: sockaddr_in) { self.storage = storage }

    public init(host: String, port: Int) throws(SystemError) {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        let h = host == "localhost" ? "127.0.0.1" : host
        if inet_pton(AF_INET, h, &sa.sin_addr) != 1 { throw SystemError("inet_pton(\(host))", EINVAL) }
        storage = sa
    }

    public var port: Int { Int(UInt16(bigEndian: storage.sin_port)) }
    public var host: String {
        var addr = storage.sin_addr
        var buf = [CChar](repeating: 0, count: 32)
        inet_ntop(AF_INET, &addr, &buf, 32)
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
    public var description: String { "\(host):\(port)" }
}

extension SocketAddress {
    /// `host` (an IPv4 literal or a name) as its first IPv4 address. Names go through getaddrinfo,
    /// which blocks: call it at start-up, never on an event loop.
    public static func resolve(host: String, port: Int) throws(SystemError) -> SocketAddress {
        if let literal = try? SocketAddress(host: host, port: port) { return literal }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else { throw SystemError("getaddrinfo(\(host))", EINVAL) }
        defer { freeaddrinfo(result) }
        guard let sa = first.pointee.ai_addr else { throw SystemError("getaddrinfo(\(host))", EINVAL) }
        let sin = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
        var out = SocketAddress(storage: sin)
        out.storage.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        return out
    }
}

/// Process-wide resource facts.
public enum ProcessLimits {
    /// Raises the open-file soft limit to the hard limit; returns the limit now in force.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int {
        var lim = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 else { return 1024 }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        }
        return Int(lim.rlim_cur)
    }

    /// Resident set size of this process in bytes (from /proc/self/statm).
    public static func residentBytes(pid: Int32? = nil) -> Int {
        let path = pid.map { "/proc/\($0)/statm" } ?? "/proc/self/statm"
        guard let f = fopen(path, "r") else { return 0 }
        defer { fclose(f) }
        var size = 0, rss = 0
        var buf = [CChar](repeating: 0, count: 256)
        guard fgets(&buf, 256, f) != nil else { return 0 }
        let line = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let parts = line.split(separator: " ")
        if parts.count >= 2 { size = Int(parts[0]) ?? 0; rss = Int(parts[1]) ?? 0 }
        _ = size
        return rss * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    public static func ignoreSIGPIPE() { signal(SIGPIPE, SIG_IGN) }
}
