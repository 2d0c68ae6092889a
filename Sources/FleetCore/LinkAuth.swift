/// How both ends of a stream link prove they hold the fleet's secret (challenge and response, both
/// ways): the gateway's challenge nonce is signed by the worker's hello, the worker's nonce by the
/// gateway's welcome. The HMAC itself is injected (libcrypto lives in RedisCoordination), so this
/// stays pure.
public struct LinkAuth: Sendable {
    /// HMAC-SHA256 of the bytes under the fleet secret (32 bytes).
    public let mac: @Sendable ([UInt8]) -> [UInt8]
    /// Fresh random bytes (nonces).
    public let random: @Sendable (Int) -> [UInt8]

    /// Whether the secret is known (until then no link is opened or accepted: the relay carries
    /// the tokens).
    public let isReady: @Sendable () -> Bool

    public init(mac: @escaping @Sendable ([UInt8]) -> [UInt8], random: @escaping @Sendable (Int) -> [UInt8],
                isReady: @escaping @Sendable () -> Bool = { true }) {
        self.mac = mac
        self.random = random
        self.isReady = isReady
    }

    public func helloMAC(challenge: [UInt8], worker: String, gateway: String, nonce: [UInt8]) -> [UInt8] {
        mac(Array("playground-link-hello".utf8) + challenge + [UInt8(min(worker.utf8.count, 255))] + Array(worker.utf8.prefix(255))
            + [UInt8(min(gateway.utf8.count, 255))] + Array(gateway.utf8.prefix(255)) + nonce)
    }

    public func welcomeMAC(nonce: [UInt8], gateway: String) -> [UInt8] {
        mac(Array("playground-link-welcome".utf8) + nonce + Array(gateway.utf8.prefix(255)))
    }

    /// Compares in time that does not depend on where the bytes differ.
    public static func equal(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count, !a.isEmpty else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}
