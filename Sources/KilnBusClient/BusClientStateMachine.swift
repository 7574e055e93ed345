import NIOCore

/// Everything the bus client knows about its connection and subscriptions, with no sockets, locks or
/// clocks: each event (a subscribe call, a message, a pong, a lost connection) is a mutating call that
/// returns what the client must do — send a command, deliver to a subscriber, fail waiters, reconnect.
/// `BusClient` holds one under its lock and carries out the actions; tests drive it directly.
///
/// Generic over what a subscription delivers to, what waits for a pong and what waits for a reply,
/// so tests can use plain values where the client uses message queues and continuations. Time is an
/// argument (`now`, deadlines), never read from a clock here: tests expire waiters at will.
struct BusClientStateMachine<Subscriber, PongWaiter, Requester> {
    enum Status: Equatable { case connecting, connected, reconnecting, closed }

    /// What goes to the broker; the wire protocol encodes it.
    typealias Command = BusCommand

    struct Subscription {
        var subject: String
        var queue: String?
        var max: Int?
        var delivered = 0
        var subscriber: Subscriber
    }

    enum UnsubscribeAction {
        /// Nothing to do (already gone).
        case none
        /// The subscription ends by itself after `max` more deliveries: tell the broker (if connected).
        case limit(send: Command?)
        /// It is over: finish the subscriber, tell the broker (if connected).
        case finish(Subscriber, send: Command?)
    }

    enum DeliveryAction {
        /// Unknown subscription (already ended): drop the message.
        case drop
        case deliver(Subscriber)
        /// Its `max`-th message: deliver, then finish the subscriber.
        case deliverAndFinish(Subscriber)
    }

    enum LossAction {
        /// A stale connection (an older generation) or a closed client.
        case ignore
        /// Fail the waiters, then reconnect.
        case reconnect(failing: [PongWaiter])
        /// Fail the waiters, then close.
        case close(failing: [PongWaiter])
    }

    /// A request waiting for its reply on the inbox.
    struct PendingRequest {
        var requester: Requester
        var subject: String
        var deadline: NIODeadline
    }

    /// A flush waiting for its pong. A flush that timed out leaves its slot (waiter nil) so that the
    /// pong that answers it later is not taken for the next flush's.
    struct PendingPong {
        var waiter: PongWaiter?
        var deadline: NIODeadline
    }

    /// Waiters whose deadline passed, to be failed with a timeout.
    struct Expired {
        var requests: [(requester: Requester, subject: String)] = []
        var pongs: [PongWaiter] = []
    }

    static var inboxSID: String { "_inbox" }

    private(set) var status: Status = .connecting
    /// Bumped by every handshake; events from an older connection carry an older number.
    private(set) var generation = 0
    private var subscriptions: [String: Subscription] = [:]
    private var nextSID = 0
    private var pongWaiters: [PendingPong] = []
    private var requests: [String: PendingRequest] = [:]
    private var nextRequest = 0

    var subscriptionCount: Int { subscriptions.count }
    var pendingRequestCount: Int { requests.count }
    var sids: [String] { Array(subscriptions.keys) }

    // MARK: subscriptions

    /// A new subscription; returns its sid and, when connected, the command to send now (while
    /// (re)connecting, the handshake sends it).
    mutating func subscribe(subject: String, queue: String?, max: Int?, subscriber: Subscriber) throws(BusClientError) -> (sid: String, send: Command?) {
        guard status != .closed else { throw .closed }
        nextSID += 1
        let sid = String(nextSID)
        subscriptions[sid] = Subscription(subject: subject, queue: queue, max: max, subscriber: subscriber)
        return (sid, status == .connected ? .subscribe(sid: sid, subject: subject, queue: queue, max: max) : nil)
    }

    /// The request/reply inbox: one wildcard subscription under a fixed sid, made on first use.
    mutating func subscribeInbox(subject: String, subscriber: () -> Subscriber) throws(BusClientError) -> Command? {
        guard status != .closed else { throw .closed }
        guard subscriptions[Self.inboxSID] == nil else { return nil }
        subscriptions[Self.inboxSID] = Subscription(subject: subject, subscriber: subscriber())
        return status == .connected ? .subscribe(sid: Self.inboxSID, subject: subject, queue: nil, max: nil) : nil
    }

    /// Ends `sid` now (`max` nil) or after `max` deliveries in total.
    mutating func unsubscribe(sid: String, max: Int?) throws(BusClientError) -> UnsubscribeAction {
        guard status != .closed else { throw .closed }
        guard var subscription = subscriptions[sid] else { return .none }
        let connected = status == .connected
        if let max, subscription.delivered < max {
            subscription.max = max
            subscriptions[sid] = subscription
            return .limit(send: connected ? .unsubscribe(sid: sid, max: max) : nil)
        }
        subscriptions[sid] = nil
        return .finish(subscription.subscriber, send: connected ? .unsubscribe(sid: sid, max: nil) : nil)
    }

    /// A message for `sid` arrived.
    mutating func messageArrived(sid: String) -> DeliveryAction {
        guard let index = subscriptions.index(forKey: sid) else { return .drop }
        subscriptions.values[index].delivered += 1
        let subscription = subscriptions.values[index]
        if let max = subscription.max, subscription.delivered >= max {
            subscriptions.remove(at: index)
            return .deliverAndFinish(subscription.subscriber)
        }
        return .deliver(subscription.subscriber)
    }

    // MARK: flush

    /// A flush: when connected the waiter is queued until `deadline` and a ping must go out;
    /// otherwise it fails at once.
    mutating func ping(_ waiter: PongWaiter, deadline: NIODeadline) -> Result<Command, BusClientError> {
        guard status == .connected else { return .failure(.connectionLost) }
        pongWaiters.append(PendingPong(waiter: waiter, deadline: deadline))
        return .success(.ping)
    }

    /// Pongs answer pings in order; the pong of a flush that timed out answers nobody.
    mutating func pongArrived() -> PongWaiter? {
        pongWaiters.isEmpty ? nil : pongWaiters.removeFirst().waiter
    }

    // MARK: request/reply

    /// A new request's token: the last token of its reply subject under the inbox.
    mutating func makeRequestToken() -> String {
        nextRequest += 1
        return String(nextRequest, radix: 36)
    }

    /// The request `token` to `subject` waits for its reply until `deadline`. Returns the inbox
    /// subscription to send if this is the first request.
    mutating func startRequest(
        token: String, subject: String, requester: Requester, deadline: NIODeadline, inbox: String, inboxSubscriber: () -> Subscriber
    ) throws(BusClientError) -> Command? {
        let subscribe = try subscribeInbox(subject: inbox, subscriber: inboxSubscriber)
        requests[token] = PendingRequest(requester: requester, subject: subject, deadline: deadline)
        return subscribe
    }

    /// The reply for `token` arrived (or the request ended otherwise: cancelled, not sent). Nil when
    /// it already ended (timed out, answered twice, never existed).
    mutating func finishRequest(token: some StringProtocol) -> Requester? {
        requests.removeValue(forKey: String(token))?.requester
    }

    // MARK: deadlines

    /// The earliest deadline of anything still waiting: when the client's timer must next fire.
    var nextDeadline: NIODeadline? {
        let request = requests.values.lazy.map(\.deadline).min()
        let pong = pongWaiters.lazy.filter { $0.waiter != nil }.map(\.deadline).min()
        switch (request, pong) {
        case (let r?, let p?): return min(r, p)
        case (let r, let p): return r ?? p
        }
    }

    /// Takes out every request and flush whose deadline is at or before `now`.
    mutating func expire(now: NIODeadline) -> Expired {
        var expired = Expired()
        for (token, request) in requests where request.deadline <= now {
            requests[token] = nil
            expired.requests.append((request.requester, request.subject))
        }
        for i in pongWaiters.indices where pongWaiters[i].deadline <= now {
            if let waiter = pongWaiters[i].waiter { expired.pongs.append(waiter) }
            pongWaiters[i].waiter = nil
        }
        return expired
    }

    // MARK: connection lifecycle

    /// A new connection finished its greeting: returns its generation and what to re-subscribe — every
    /// live subscription, a `max` one only for its remaining deliveries (spent one-shots are gone).
    mutating func connectionEstablished() throws(BusClientError) -> (generation: Int, resubscribe: [Command]) {
        guard status != .closed else { throw .closed }
        generation += 1
        status = .connected
        let resubscribe = subscriptions.sorted { $0.key < $1.key }.compactMap { sid, s -> Command? in
            let remaining = s.max.map { $0 - s.delivered }
            if let remaining, remaining <= 0 { return nil }
            return .subscribe(sid: sid, subject: s.subject, queue: s.queue, max: remaining)
        }
        return (generation, resubscribe)
    }

    /// The handshake of the connection of `generation` failed after `connectionEstablished`: a flush
    /// issued in between waits on that connection and must fail now, not be answered by a later one.
    mutating func handshakeFailed(generation failed: Int) -> [PongWaiter] {
        guard failed == generation, status == .connected else { return [] }
        status = .connecting
        defer { pongWaiters = [] }
        return pongWaiters.compactMap(\.waiter)
    }

    /// The connection of `generation` closed.
    mutating func connectionLost(generation lost: Int, reconnect: Bool) -> LossAction {
        guard lost == generation, status == .connected else { return .ignore }
        // Requests stay: their replies may still come on the next connection (the inbox is
        // re-subscribed), and each has its own deadline.
        let failing = pongWaiters.compactMap(\.waiter)
        pongWaiters = []
        if reconnect {
            status = .reconnecting
            return .reconnect(failing: failing)
        }
        return .close(failing: failing)
    }

    /// Closes for good: every subscriber is finished and every waiter failed.
    mutating func close() -> (subscribers: [Subscriber], waiters: [PongWaiter], requesters: [Requester]) {
        status = .closed
        defer {
            subscriptions = [:]
            pongWaiters = []
            requests = [:]
        }
        return (subscriptions.values.map(\.subscriber), pongWaiters.compactMap(\.waiter), requests.values.map(\.requester))
    }
}
