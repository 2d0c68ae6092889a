/// A growable byte queue: append at the end, consume from the front.
/// Consumed space is reclaimed by compaction once it dominates, so a long-lived connection's buffer
/// stays the size of what is actually pending.
public struct ByteBuffer: Sendable {
    public private(set) var storage: [UInt8]
    public private(set) var readerIndex: Int = 0

    public init() { storage = [] }
    public init(capacity: Int) { storage = []; storage.reserveCapacity(capacity) }
    public init(_ bytes: [UInt8]) { storage = bytes }
    public init(_ string: String) { storage = Array(string.utf8) }

    @inline(__always) public var readableBytes: Int { storage.count - readerIndex }
    @inline(__always) public var isEmpty: Bool { readerIndex == storage.count }
    public var capacity: Int { storage.capacity }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfWorthIt(incoming: bytes.count)
        storage.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) {
        compactIfWorthIt(incoming: bytes.count)
        storage.append(contentsOf: bytes)
    }

    public mutating func append<S: Sequence>(contentsOf bytes: S) where S.Element == UInt8 {
        storage.append(contentsOf: bytes)
    }

    public mutating func append(_ byte: UInt8) { storage.append(byte) }

    public mutating func append(_ string: String) {
        compactIfWorthIt(incoming: string.utf8.count)
        storage.append(contentsOf: string.utf8)
    }

    @inline(__always) public subscript(offset: Int) -> UInt8 { storage[readerIndex + offset] }

    public mutating func consume(_ n: Int) {
        precondition(n <= readableBytes)
        readerIndex += n
        if readerIndex == storage.count {
            // Keep the allocation only if it is small; a drained big buffer gives its memory back.
            if storage.capacity > 64 * 1024 { storage = [] } else { storage.removeAll(keepingCapacity: true) }
            readerIndex = 0
        }
    }

    public mutating func clear() {
        storage = []
        readerIndex = 0
    }

    public func readableSlice(_ offset: Int = 0, count: Int? = nil) -> ArraySlice<UInt8> {
        let start = readerIndex + offset
        return storage[start..<(count.map { start + $0 } ?? storage.count)]
    }

    public func readableArray() -> [UInt8] { Array(storage[readerIndex...]) }

    public func withReadableBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[readerIndex...])) }
    }

    private mutating func compactIfWorthIt(incoming: Int) {
        if readerIndex > 0 && (readerIndex >= storage.count / 2 || storage.count + incoming > storage.capacity) {
            storage.removeFirst(readerIndex)
            readerIndex = 0
        }
    }
}
