import NIOCore

/// A protocol-level failure, carried to the peer as an `err` frame.
///
/// Every error the broker reports goes through this one type so the code, the message and whether the
/// connection survives are decided in one place (`docs/protocol.md` lists the codes).
public struct BusError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String
    /// Fatal errors close the connection after the `err` frame is sent.
    public var isFatal: Bool

    public init(code: Int, message: String, isFatal: Bool = false) {
        self.code = code
        self.message = message
        self.isFatal = isFatal
    }

    public var description: String { "bus error \(code): \(message)" }

    /// The `err` frame that reports this error.
    public var header: BusHeader {
        var h = BusHeader(op: .err)
        h.code = code
        h.message = message
        return h
    }

    /// Codes a caller tests for, by name (not by constructing a throwaway error to read its code).
    public enum Code {
        public static let frameTooLarge = 413
    }

    // The catalogue of codes, so call sites name the condition instead of a number.
    public static func badRequest(_ message: String) -> BusError { BusError(code: 400, message: message) }
    public static func badFraming(_ message: String) -> BusError { BusError(code: 400, message: message, isFatal: true) }
    public static func authorizationRequired(_ message: String) -> BusError { BusError(code: 401, message: message, isFatal: true) }
    public static func permissionDenied(_ message: String) -> BusError { BusError(code: 403, message: message) }
    public static func staleConnection() -> BusError { BusError(code: 408, message: "stale connection: no pong to 2 pings", isFatal: true) }
    public static func frameTooLarge(_ length: Int, max: Int) -> BusError {
        BusError(code: Code.frameTooLarge, message: "frame length \(length) exceeds max_frame \(max)", isFatal: true)
    }
    public static func slowConsumer(pending: Int, cap: Int) -> BusError {
        BusError(code: 429, message: "slow consumer: \(pending) bytes pending exceeds the outbound cap of \(cap)", isFatal: true)
    }
    /// A configured limit (connections, subscriptions) was reached.
    public static func limitReached(_ message: String, fatal: Bool) -> BusError { BusError(code: 429, message: message, isFatal: fatal) }
    public static func handshakeTimeout(_ seconds: Int64) -> BusError {
        BusError(code: 408, message: "no 'connect' within \(seconds) s of connecting", isFatal: true)
    }
    public static func shuttingDown() -> BusError { BusError(code: 503, message: "broker is shutting down", isFatal: true) }
}
