import KilnBus
import NIOCore

/// The broker's view of one client connection, as a pure state machine.
///
/// It validates frames, enforces the handshake, auth and permissions, and runs the keepalive clock;
/// it returns what to do and never touches a socket, so every rule is testable without I/O.
/// The clock comes in as a parameter (`now`).
public struct ConnectionStateMachine: Sendable {
    public struct Configuration: Sendable {
        public var authenticator: Authenticator
        /// How often an idle connection is pinged.
        public var pingInterval: TimeAmount
        /// Unanswered pings after which the connection is closed.
        public var maxPingsOutstanding: Int
        /// When auth is required: a connection that has not sent `connect` this long after opening is closed.
        public var handshakeTimeout: TimeAmount

        public init(
            authenticator: Authenticator = Authenticator(.none), pingInterval: TimeAmount = .seconds(20),
            maxPingsOutstanding: Int = 2, handshakeTimeout: TimeAmount = .seconds(5)
        ) {
            self.authenticator = authenticator
            self.pingInterval = pingInterval
            self.maxPingsOutstanding = maxPingsOutstanding
            self.handshakeTimeout = handshakeTimeout
        }
    }

    public enum State: Sendable, Equatable {
        case awaitingConnect
        case open(Authenticator.Identity)
        case closed
    }

    /// What the connection handler must do in reply to one frame.
    public enum Action: Sendable, Equatable {
        case none
        /// Route the frame's payload.
        case publish(subject: String, reply: String?, headers: [String: String]?)
        /// Route only if the router holds a response allowance for `subject` (allow_responses).
        case publishIfResponseAllowed(subject: String, reply: String?, headers: [String: String]?)
        case subscribe(sid: String, subject: String, queue: String?, max: Int?)
        case unsubscribe(sid: String, max: Int?)
        /// Send this control frame (pong, ok).
        case send(BusHeader)
        /// Send an `err` frame; close afterwards if the error is fatal.
        case fail(BusError)
    }

    public enum KeepaliveAction: Sendable, Equatable {
        case none
        case sendPing
        case close(BusError)
    }

    public let configuration: Configuration
    public private(set) var state: State
    public private(set) var verbose = false
    private var lastActivity: NIODeadline
    private let openedAt: NIODeadline
    private var pingsOutstanding = 0
    private var connectSeen = false
    /// The verified client certificate's common name (mTLS), set by the connection once TLS is up.
    public var certificateName: String?

    public init(configuration: Configuration, now: NIODeadline) {
        self.configuration = configuration
        self.lastActivity = now
        self.openedAt = now
        if configuration.authenticator.isRequired {
            state = .awaitingConnect
        } else {
            state = .open(Authenticator.Identity(name: nil, permissions: .unrestricted))
        }
    }

    public var permissions: SubjectPermissions? {
        if case .open(let identity) = state { return identity.permissions }
        return nil
    }

    /// A frame arrived from the client.
    public mutating func frameReceived(_ header: BusHeader, now: NIODeadline) -> Action {
        lastActivity = now
        switch state {
        case .closed:
            return .none
        case .awaitingConnect:
            guard header.op == .connect else {
                state = .closed
                return .fail(.authorizationRequired("authorization required: the first frame must be 'connect', got '\(header.op.rawValue)'"))
            }
            return connect(header)
        case .open(let identity):
            return openFrame(header, identity: identity)
        }
    }

    /// A frame whose header could not be parsed.
    public mutating func invalidFrame(_ error: BusError, now: NIODeadline) -> Action {
        lastActivity = now
        if case .awaitingConnect = state {
            state = .closed
            return .fail(.authorizationRequired("authorization required: the first frame must be 'connect' (\(error.message))"))
        }
        if error.isFatal { state = .closed }
        return .fail(error)
    }

    /// The keepalive timer fired.
    public mutating func keepaliveTick(now: NIODeadline) -> KeepaliveAction {
        guard state != .closed else { return .none }
        if now - lastActivity < configuration.pingInterval {
            // The client was heard from recently: it is alive.
            pingsOutstanding = 0
            return .none
        }
        if pingsOutstanding >= configuration.maxPingsOutstanding {
            state = .closed
            return .close(.staleConnection())
        }
        pingsOutstanding += 1
        return .sendPing
    }

    /// The handshake timer fired: a connection still waiting for `connect` is closed. A client that
    /// trickles bytes never completing a frame does not extend this (only `connect` does).
    public mutating func handshakeTick(now: NIODeadline) -> KeepaliveAction {
        guard case .awaitingConnect = state, now - openedAt >= configuration.handshakeTimeout else { return .none }
        state = .closed
        return .close(.handshakeTimeout(configuration.handshakeTimeout.nanoseconds / 1_000_000_000))
    }

    public var isAwaitingConnect: Bool { state == .awaitingConnect }

    /// Until the client has sent `connect`, it is held to small frames, with or without auth: an open
    /// broker must not buffer megabytes for connections that never introduced themselves.
    public var hasSentConnect: Bool { connectSeen }

    public mutating func closed() { state = .closed }

    // MARK: -

    private mutating func connect(_ header: BusHeader) -> Action {
        if let proto = header.proto, proto != 1 {
            state = .closed
            return .fail(BusError(code: 400, message: "unsupported protocol version \(proto); this broker speaks proto 1", isFatal: true))
        }
        connectSeen = true
        do {
            let identity = try configuration.authenticator.authenticate(header, certificateName: certificateName)
            state = .open(identity)
            verbose = header.verbose ?? false
            return verbose ? .send(BusHeader(op: .ok)) : .none
        } catch {
            state = .closed
            return .fail(error)
        }
    }

    private mutating func openFrame(_ header: BusHeader, identity: Authenticator.Identity) -> Action {
        switch header.op {
        case .pub:
            guard let subject = header.subject else { return .fail(.badRequest("'pub' needs a 'subject'")) }
            do { try Subject.validatePublish(subject) } catch { return .fail(error) }
            if let reply = header.reply {
                do { try Subject.validatePublish(reply) } catch {
                    return .fail(.badRequest("invalid reply subject '\(reply)': \(error.message)"))
                }
                guard identity.permissions.reply.permitsPublish(reply) else {
                    return .fail(.permissionDenied("permission denied: reply subject '\(reply)' (only your own inbox)"))
                }
            }
            if !identity.permissions.publish.permitsPublish(subject) {
                if identity.permissions.allowResponses {
                    return .publishIfResponseAllowed(subject: subject, reply: header.reply, headers: header.headers)
                }
                return .fail(.permissionDenied("permission denied: publish to '\(subject)'"))
            }
            return .publish(subject: subject, reply: header.reply, headers: header.headers)
        case .sub:
            guard let subject = header.subject else { return .fail(.badRequest("'sub' needs a 'subject'")) }
            guard let sid = header.sid, !sid.isEmpty else { return .fail(.badRequest("'sub' needs a non-empty string 'sid'")) }
            do { try Subject.validateSubscription(subject) } catch { return .fail(error) }
            if let queue = header.queue {
                guard !queue.isEmpty, queue.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    return .fail(.badRequest("invalid queue name '\(queue)': printable ASCII without spaces"))
                }
            }
            if let max = header.max, max <= 0 { return .fail(.badRequest("'max' must be a positive integer, got \(max)")) }
            guard identity.permissions.subscribe.permitsSubscribe(subject, queue: header.queue) else {
                return .fail(.permissionDenied("permission denied: subscribe to '\(subject)'\(header.queue.map { " in queue '\($0)'" } ?? "")"))
            }
            return .subscribe(sid: sid, subject: subject, queue: header.queue, max: header.max)
        case .unsub:
            guard let sid = header.sid, !sid.isEmpty else { return .fail(.badRequest("'unsub' needs a non-empty string 'sid'")) }
            if let max = header.max, max <= 0 { return .fail(.badRequest("'max' must be a positive integer, got \(max)")) }
            return .unsubscribe(sid: sid, max: header.max)
        case .ping:
            return .send(BusHeader(op: .pong))
        case .pong:
            pingsOutstanding = 0
            return .none
        case .connect:
            guard !connectSeen else { return .fail(.badRequest("already connected: 'connect' may only be sent once")) }
            return connect(header)
        case .info, .msg, .ok, .err:
            return .fail(.badRequest("op '\(header.op.rawValue)' is sent by the broker, not by clients"))
        }
    }
}
