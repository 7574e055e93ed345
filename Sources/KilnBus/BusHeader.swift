/// The JSON header of a bus frame (design §2).
///
/// One flat value type for every op keeps parsing allocation-light (no enum of payload structs, no
/// `Codable` on the hot path); `validate…` helpers say which fields each op requires.
public struct BusHeader: Sendable, Equatable {
    /// The message header in which the broker states who published a message: the authenticated
    /// user of the publishing connection. Set by the broker only; a client's own value is removed.
    public static let senderHeader = "kiln-sender"
    /// Beside `senderHeader`: the broker's id for the publishing connection (for audit logs; it
    /// changes when a client reconnects, so nothing binds to it).
    public static let senderConnectionHeader = "kiln-sender-connection"

    public enum Op: String, Sendable, CaseIterable {
        case info, connect, pub, sub, unsub, msg, ok, err, ping, pong
    }

    public var op: Op
    // pub / sub / msg
    public var subject: String?
    public var reply: String?
    public var headers: [String: String]?
    public var sid: String?
    public var queue: String?
    public var max: Int?
    // connect
    public var name: String?
    public var token: String?
    public var user: String?
    public var password: String?
    public var verbose: Bool?
    public var proto: Int?
    // info
    public var serverID: String?
    public var version: String?
    public var maxFrame: Int?
    public var authRequired: Bool?
    // err
    public var code: Int?
    public var message: String?

    public init(op: Op) { self.op = op }

    public static func pub(_ subject: String, reply: String? = nil, headers: [String: String]? = nil) -> BusHeader {
        var h = BusHeader(op: .pub)
        h.subject = subject
        h.reply = reply
        h.headers = headers
        return h
    }

    public static func sub(_ subject: String, sid: String, queue: String? = nil, max: Int? = nil) -> BusHeader {
        var h = BusHeader(op: .sub)
        h.subject = subject
        h.sid = sid
        h.queue = queue
        h.max = max
        return h
    }

    public static func unsub(sid: String, max: Int? = nil) -> BusHeader {
        var h = BusHeader(op: .unsub)
        h.sid = sid
        h.max = max
        return h
    }
}
