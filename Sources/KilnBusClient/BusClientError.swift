import KilnBus

/// Failures a bus client reports to its caller.
public enum BusClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No reply within the request's timeout.
    case timeout(subject: String)
    /// The broker said nobody is subscribed to the request subject.
    case noResponders(subject: String)
    /// The connection is closed (by `close()`/`drain()`, or reconnecting gave up).
    case closed
    /// The connection dropped while waiting (a flush's pong, the handshake).
    case connectionLost
    /// No pong answered a flush within its timeout.
    case flushTimeout
    /// Could not reach the broker.
    case connectFailed(String)
    /// The broker refused us (auth failure, protocol error).
    case broker(BusError)
    /// The frame would exceed the broker's `max_frame`.
    case frameTooLarge(size: Int, max: Int)

    /// The broker refused the credentials: another cluster member will refuse them too.
    var isAuthenticationFailure: Bool {
        if case .broker(let e) = self { return e.code == 401 }
        return false
    }

    public var description: String {
        switch self {
        case .timeout(let s): "request to '\(s)' timed out"
        case .noResponders(let s): "no responders on '\(s)'"
        case .closed: "bus connection is closed"
        case .connectionLost: "bus connection lost"
        case .flushTimeout: "the broker did not answer a flush in time"
        case .connectFailed(let m): "cannot connect to the broker: \(m)"
        case .broker(let e): "broker error \(e.code): \(e.message)"
        case .frameTooLarge(let size, let max): "frame of \(size) bytes exceeds the broker's max_frame of \(max)"
        }
    }
}
