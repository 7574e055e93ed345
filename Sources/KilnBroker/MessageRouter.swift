import KilnBus
import NIOConcurrencyHelpers
import NIOCore

/// All subscriptions of all connections, and the routing of published messages to them.
///
/// One lock guards the index, the per-connection subscription tables and the response allowances.
/// Matching, queue-group choice, counting a delivery against `max` and removing a spent subscription
/// happen in one critical section: that is the whole exactly-once guarantee for `max: 1`.
// @unchecked: every mutable field is accessed with `lock` held.
public final class MessageRouter: @unchecked Sendable {
    struct ConnectionEntry {
        var subscriptions: [String: Subscription] = [:]
        /// Reply subjects this connection may publish to once (allow_responses).
        var responseAllowances: [String: Int] = [:]
        var recordsResponses = false
    }

    private let lock = NIOLock()
    private var index: SubjectIndex
    private var connections: [Int: ConnectionEntry] = [:]
    private var rng = SystemRandomNumberGenerator()
    let metrics: BrokerMetrics?
    /// Called (outside the lock) for a subscriber whose backlog passed its cap.
    var onSlowConsumer: (@Sendable (_ outbound: OutboundBuffer, _ connectionID: Int, _ pending: Int) -> Void)?
    /// Bound on remembered response allowances per connection, so a requester flood cannot grow memory.
    let maxResponseAllowances: Int
    /// Live subscriptions one connection may hold.
    let maxSubscriptionsPerConnection: Int

    public init(cacheLimit: Int = 4096, maxResponseAllowances: Int = 65_536, maxSubscriptionsPerConnection: Int = 10_000, metrics: BrokerMetrics? = nil) {
        self.maxSubscriptionsPerConnection = maxSubscriptionsPerConnection
        self.index = SubjectIndex(cacheLimit: cacheLimit)
        self.metrics = metrics
        self.maxResponseAllowances = maxResponseAllowances
    }

    public var subscriptionCount: Int { lock.withLock { index.count } }

    func addConnection(_ id: Int, recordsResponses: Bool) {
        lock.withLock {
            connections[id] = ConnectionEntry(recordsResponses: recordsResponses)
        }
    }

    func setRecordsResponses(_ id: Int, _ value: Bool) {
        lock.withLock { connections[id]?.recordsResponses = value }
    }

    /// Removes a connection and every subscription it held.
    func removeConnection(_ id: Int) {
        lock.withLock {
            guard let entry = connections.removeValue(forKey: id) else { return }
            for sub in entry.subscriptions.values {
                sub.isRemoved = true
                index.remove(sub)
            }
            metrics?.subscriptions.decrement(by: Double(entry.subscriptions.count))
        }
    }

    func subscribe(_ subscription: Subscription) throws(BusError) {
        lock.lock()
        defer { lock.unlock() }
        do {
            guard connections[subscription.connectionID] != nil else { return }
            if connections[subscription.connectionID]!.subscriptions[subscription.sid] != nil {
                throw .badRequest("sid '\(subscription.sid)' is already in use on this connection")
            }
            guard connections[subscription.connectionID]!.subscriptions.count < maxSubscriptionsPerConnection else {
                metrics?.limitRefusals(.subscriptions)
                throw .limitReached("too many subscriptions on this connection (at most \(maxSubscriptionsPerConnection))", fatal: false)
            }
            connections[subscription.connectionID]!.subscriptions[subscription.sid] = subscription
            index.insert(subscription)
            metrics?.subscriptions.increment()
        }
    }

    /// `unsub`: remove now, or once `max` total deliveries have been made.
    func unsubscribe(connectionID: Int, sid: String, max: Int?) throws(BusError) {
        lock.lock()
        defer { lock.unlock() }
        do {
            guard let sub = connections[connectionID]?.subscriptions[sid] else {
                throw .badRequest("unknown sid '\(sid)'")
            }
            if let max, sub.delivered < max {
                sub.max = max
                return
            }
            removeLocked(sub)
        }
    }

    private func removeLocked(_ sub: Subscription) {
        guard !sub.isRemoved else { return }
        sub.isRemoved = true
        index.remove(sub)
        connections[sub.connectionID]?.subscriptions[sub.sid] = nil
        metrics?.subscriptions.decrement()
    }

    /// Consumes a response allowance for `subject` held by `connectionID`.
    func consumeResponseAllowance(connectionID: Int, subject: String) -> Bool {
        lock.withLock {
            guard let n = connections[connectionID]?.responseAllowances[subject] else { return false }
            if n <= 1 {
                connections[connectionID]!.responseAllowances[subject] = nil
            } else {
                connections[connectionID]!.responseAllowances[subject] = n - 1
            }
            return true
        }
    }

    /// Delivers a message to every matching subscription (one per queue group).
    /// - Returns: the number of deliveries made.
    @discardableResult
    public func publish(subject: String, reply: String?, headers: [String: String]?, payload: ByteBuffer) -> Int {
        var scratch = ByteBuffer()
        var flushes = FlushBatch()
        defer { flushes.run() }
        return publish(subject: subject, reply: reply, headers: headers, payload: payload, scratch: &scratch, flushes: &flushes)
    }

    /// `scratch` is a buffer the caller reuses across calls, so the shared header prefix costs no
    /// allocation. The deliveries' flushes go into `flushes`, which the caller must run after its burst
    /// of publishes (`FlushBatch`): one wake of each subscriber's event loop per burst.
    @discardableResult
    public func publish(
        subject: String, reply: String?, headers: [String: String]?, payload: ByteBuffer,
        scratch prefix: inout ByteBuffer, flushes: inout FlushBatch
    ) -> Int {
        // The part of the `msg` header shared by every recipient, built once.
        prefix.clear()
        prefix.writeStaticString("{\"op\":\"msg\",\"subject\":")
        prefix.writeJSONString(subject)
        if let reply {
            prefix.writeStaticString(",\"reply\":")
            prefix.writeJSONString(reply)
        }
        if let headers {
            prefix.writeStaticString(",\"headers\":{")
            var first = true
            for key in headers.keys.sorted() {
                if !first { prefix.writeInteger(UInt8(ascii: ",")) }
                first = false
                prefix.writeJSONString(key)
                prefix.writeInteger(UInt8(ascii: ":"))
                prefix.writeJSONString(headers[key]!)
            }
            prefix.writeInteger(UInt8(ascii: "}"))
        }
        var slow: [(OutboundBuffer, Int, Int)] = []
        let delivered = prefix.withUnsafeReadableBytes { prefixBytes in
            payload.withUnsafeReadableBytes { payloadBytes in
                lock.withLock {
                    var match = index.match(subject)
                    var deliveries = 0
                    for sub in match.plain
                    where deliverLocked(sub, subject: subject, reply: reply, prefix: prefixBytes, payload: payloadBytes, slow: &slow, flushes: &flushes) {
                        deliveries += 1
                    }
                    if !match.queues.isEmpty {
                        for key in match.queues.keys {
                            // Pick a member at random; if it cannot take the message (filtered, closed),
                            // try the others so the group still gets it exactly once.
                            var members = match.queues[key]!
                            while !members.isEmpty {
                                let i = Int.random(in: 0..<members.count, using: &rng)
                                if deliverLocked(members[i], subject: subject, reply: reply, prefix: prefixBytes, payload: payloadBytes, slow: &slow, flushes: &flushes) {
                                    deliveries += 1
                                    break
                                }
                                members.swapAt(i, members.count - 1)
                                members.removeLast()
                            }
                        }
                        match.queues.removeAll()
                    }
                    if deliveries > 0 { metrics?.recordDeliveries(deliveries, bytes: deliveries * payloadBytes.count) }
                    return deliveries
                }
            }
        }
        if !slow.isEmpty, let onSlowConsumer {
            for (outbound, id, pending) in slow { onSlowConsumer(outbound, id, pending) }
        }
        return delivered
    }

    /// Hands one message to one subscription; counts it against `max` and removes the subscription
    /// when spent, all under the router lock.
    private func deliverLocked(
        _ sub: Subscription, subject: String, reply: String?,
        prefix: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer,
        slow: inout [(OutboundBuffer, Int, Int)], flushes: inout FlushBatch
    ) -> Bool {
        guard !sub.isRemoved, !sub.isSpent else { return false }
        if let filter = sub.deliveryFilter, !filter.permitsDelivery(subject) { return false }
        if let outbound = sub.outbound {
            let result = outbound.enqueue(flushingIn: &flushes) { buffer in
                let headerLength = prefix.count + sub.sidSuffix.count
                buffer.writeInteger(UInt32(4 + headerLength + payload.count))
                buffer.writeInteger(UInt32(headerLength))
                buffer.writeBytes(prefix)
                buffer.writeBytes(sub.sidSuffix)
                buffer.writeBytes(payload)
            }
            guard case .queued(let backlog) = result else { return false }
            if backlog > sub.outboundCap {
                slow.append((outbound, sub.connectionID, backlog))
                return false
            }
        }
        sub.delivered += 1
        if let reply, connections[sub.connectionID]?.recordsResponses == true {
            if connections[sub.connectionID]!.responseAllowances.count < maxResponseAllowances {
                connections[sub.connectionID]!.responseAllowances[reply, default: 0] += 1
            }
        }
        if sub.isSpent { removeLocked(sub) }
        return true
    }
}
