import CLinux
import Runtime
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A listening socket on one loop. Each loop of a server has its own, bound to the same port
/// with SO_REUSEPORT, so the kernel spreads new connections across loops (and across processes
/// that share the port) without a hand-off between threads.
final class Listener: Pollable {
    let fd: Int32
    let loop: EventLoop
    let maxOutboundBytes: Int
    let onAccept: (Connection) -> Void
    private var pausedUntilFDs = false

    init(fd: Int32, loop: EventLoop, maxOutboundBytes: Int, onAccept: @escaping (Connection) -> Void) {
        self.fd = fd
        self.loop = loop
        self.maxOutboundBytes = maxOutboundBytes
        self.onAccept = onAccept
    }

    func handleEvents(_ events: UInt32) {
        for _ in 0..<64 {
            let cfd: Int32?
            do { cfd = try Posix.accept(fd) } catch {
                if error.errno == EMFILE || error.errno == ENFILE {
                    // Out of descriptors: stop accepting for a moment instead of spinning on EPOLLIN.
                    try? loop.modify(fd: fd, events: 0)
                    loop.schedule(afterNanos: 100_000_000) { [weak self] in
                        guard let self else { return }
                        try? self.loop.modify(fd: self.fd, events: EPOLLIN.rawValue)
                    }
                }
                return
            }
            guard let cfd else { return }
            do {
                let c = try Connection.accepted(fd: cfd, loop: loop, maxOutboundBytes: maxOutboundBytes)
                onAccept(c)
            } catch {
                Posix.close(cfd)
            }
        }
    }

    func close() {
        loop.deregister(fd: fd)
        Posix.close(fd)
    }
}

/// Listens on host:port on every loop of a group.
public final class TCPServer: @unchecked Sendable {
    public let group: EventLoopGroup
    public private(set) var boundAddress: SocketAddress
    private var listeners: [Listener] = []

    /// `onAccept` runs on the accepting connection's loop. Unless `sharePort`, a port that any
    /// other socket already listens on is refused (EADDRINUSE): our own listeners use SO_REUSEPORT
    /// to spread connections over loops, and without this check a second node started on the same
    /// port would silently split the traffic with the first.
    public init(group: EventLoopGroup, host: String, port: Int, backlog: Int32 = 4096,
                maxOutboundBytes: Int = 1 << 20, sharePort: Bool = false,
                onAccept: @escaping @Sendable (Connection) -> Void) throws(SystemError) {
        self.group = group
        var address = try SocketAddress(host: host, port: port)
        if !sharePort && port != 0 { try TCPServer.checkPortFree(address) }
        var fds: [Int32] = []
        do {
            for _ in group.loops {
                let fd = try Posix.tcpSocket()
                fds.append(fd)
                try Posix.setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
                try Posix.setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
                try Posix.bind(fd, address)
                try Posix.listen(fd, backlog: backlog)
                // Port 0: the first bind picks the port; the others join it.
                address = try Posix.localAddress(fd)
            }
        } catch {
            for fd in fds { Posix.close(fd) }
            throw error
        }
        boundAddress = address
        for (loop, fd) in zip(group.loops, fds) {
            let l = Listener(fd: fd, loop: loop, maxOutboundBytes: maxOutboundBytes, onAccept: onAccept)
            listeners.append(l)
            let box = UncheckedBox(l)
            loop.execute {
                try? loop.register(fd: fd, box.value, events: EPOLLIN.rawValue)
            }
        }
    }

    /// Binds a probe without SO_REUSEPORT: it fails while any socket listens on the address, with
    /// or without SO_REUSEPORT (SO_REUSEADDR still lets us past connections in TIME_WAIT).
    public static func checkPortFree(host: String, port: Int) throws(SystemError) {
        guard port != 0 else { return }
        try checkPortFree(try SocketAddress(host: host, port: port))
    }

    static func checkPortFree(_ address: SocketAddress) throws(SystemError) {
        let probe = try Posix.tcpSocket()
        defer { Posix.close(probe) }
        try Posix.setOption(probe, SOL_SOCKET, SO_REUSEADDR, 1)
        do throws(SystemError) { try Posix.bind(probe, address) } catch {
            if error.errno == EADDRINUSE { throw SystemError("listen on \(address): the port is in use by another process (pass --share-port to share it on purpose)", error.errno) }
            throw error
        }
    }

    /// Stops accepting, each listener on its loop; `done` runs (on some loop) once all are
    /// closed. Open connections are left to their owners.
    public func close(done: @escaping @Sendable () -> Void) {
        let all = listeners
        listeners.removeAll()
        guard !all.isEmpty else { return done() }
        final class Countdown: Sendable {
            let left: Atomic<Int>
            let done: @Sendable () -> Void
            init(_ n: Int, _ done: @escaping @Sendable () -> Void) { left = Atomic(n); self.done = done }
        }
        let countdown = Countdown(all.count, done)
        for l in all {
            let box = UncheckedBox(l)
            l.loop.execute {
                box.value.close()
                if countdown.left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { countdown.done() }
            }
        }
    }

    /// Stops accepting; open connections are left to their owners.
    public func close() async {
        for l in listeners {
            let box = UncheckedBox(l)
            _ = try? await l.loop.submit { box.value.close() }
        }
        listeners.removeAll()
    }
}

/// Carries a loop-confined object across a hand-off to its own loop.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
