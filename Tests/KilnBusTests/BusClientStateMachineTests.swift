import KilnTestSupport
import NIOCore
import Testing

@testable import KilnBusClient

/// The bus client's bookkeeping, driven event by event with no socket.
@Suite struct BusClientStateMachineTests {
    typealias Machine = BusClientStateMachine<String, Int, String>
    /// The injected clock: every deadline is relative to this instant.
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var later: NIODeadline { t0 + .seconds(5) }

    func connected() throws -> Machine {
        var m = Machine()
        _ = try m.connectionEstablished()
        return m
    }

    @Test func subscribingWhileConnectingSendsNothingUntilTheHandshakeResubscribes() throws {
        var m = Machine()
        let (sid, send) = try m.subscribe(subject: "a.>", queue: "q", max: nil, subscriber: "A")
        #expect(send == nil)
        let (generation, resubscribe) = try m.connectionEstablished()
        #expect(generation == 1)
        #expect(resubscribe == [.subscribe(sid: sid, subject: "a.>", queue: "q", max: nil)])
        let (sid2, send2) = try m.subscribe(subject: "b", queue: nil, max: 1, subscriber: "B")
        #expect(send2 == .subscribe(sid: sid2, subject: "b", queue: nil, max: 1))
    }

    @Test func aMaxSubscriptionFinishesOnItsLastMessageAndIsRenewedOnlyForWhatRemains() throws {
        var m = try connected()
        let (sid, _) = try m.subscribe(subject: "s", queue: nil, max: 3, subscriber: "S")
        guard case .deliver("S") = m.messageArrived(sid: sid) else {
            Issue.record("first")
            return
        }
        // Lost and reconnected: two deliveries remain.
        guard case .reconnect = m.connectionLost(generation: 1, reconnect: true) else {
            Issue.record("loss")
            return
        }
        let (_, resubscribe) = try m.connectionEstablished()
        #expect(resubscribe == [.subscribe(sid: sid, subject: "s", queue: nil, max: 2)])
        guard case .deliver = m.messageArrived(sid: sid) else {
            Issue.record("second")
            return
        }
        guard case .deliverAndFinish("S") = m.messageArrived(sid: sid) else {
            Issue.record("third")
            return
        }
        guard case .drop = m.messageArrived(sid: sid) else {
            Issue.record("after the end")
            return
        }
        // A spent one-shot is not renewed.
        _ = m.connectionLost(generation: 2, reconnect: true)
        let renewed = try m.connectionEstablished().resubscribe
        #expect(renewed.isEmpty)
    }

    @Test func unsubscribeWithMaxLimitsAndWithoutEndsAtOnce() throws {
        var m = try connected()
        let (sid, _) = try m.subscribe(subject: "s", queue: nil, max: nil, subscriber: "S")
        _ = m.messageArrived(sid: sid)
        guard case .limit(.unsubscribe(sid, 3)?) = try m.unsubscribe(sid: sid, max: 3) else {
            Issue.record("limit")
            return
        }
        guard case .finish("S", .unsubscribe(sid, nil)?) = try m.unsubscribe(sid: sid, max: nil) else {
            Issue.record("finish")
            return
        }
        guard case .none = try m.unsubscribe(sid: sid, max: nil) else {
            Issue.record("twice")
            return
        }
        // A max already reached ends it now.
        let (other, _) = try m.subscribe(subject: "t", queue: nil, max: nil, subscriber: "T")
        _ = m.messageArrived(sid: other)
        _ = m.messageArrived(sid: other)
        guard case .finish("T", _) = try m.unsubscribe(sid: other, max: 2) else {
            Issue.record("reached")
            return
        }
    }

    @Test func pongsAnswerPingsInOrderAndALostConnectionFailsTheRest() throws {
        var m = try connected()
        let first = m.ping(1, deadline: later)
        let second = m.ping(2, deadline: later)
        #expect(try first.get() == .ping && second.get() == .ping)
        let answered = m.pongArrived()
        #expect(answered == 1)
        guard case .reconnect(let failing) = m.connectionLost(generation: 1, reconnect: true) else {
            Issue.record("loss")
            return
        }
        #expect(failing == [2])
        let late = m.pongArrived()
        #expect(late == nil)
        // Not connected: a flush fails at once instead of waiting for a pong that cannot come.
        let third = m.ping(3, deadline: later)
        #expect(throws: BusClientError.connectionLost) { try third.get() }
    }

    @Test func aStaleConnectionsLossIsIgnored() throws {
        var m = try connected()
        _ = m.connectionLost(generation: 1, reconnect: true)
        _ = try m.connectionEstablished()  // generation 2
        guard case .ignore = m.connectionLost(generation: 1, reconnect: true) else {
            Issue.record("stale")
            return
        }
        #expect(m.status == .connected)
        guard case .close = m.connectionLost(generation: 2, reconnect: false) else {
            Issue.record("close")
            return
        }
    }

    @Test func aFailedHandshakeFailsTheFlushesWaitingOnIt() throws {
        var m = Machine()
        let (generation, _) = try m.connectionEstablished()
        _ = m.ping(7, deadline: later)
        let other = m.handshakeFailed(generation: generation + 1)  // not this connection
        let this = m.handshakeFailed(generation: generation)
        #expect(other.isEmpty)
        #expect(this == [7])
        #expect(m.status == .connecting)
    }

    @Test func closingFinishesEverythingAndRefusesWhatFollows() throws {
        var m = try connected()
        _ = try m.subscribe(subject: "a", queue: nil, max: nil, subscriber: "A")
        _ = try m.subscribeInbox(subject: "_INBOX.x.*") { "inbox" }
        let again = try m.subscribeInbox(subject: "_INBOX.x.*") { "again" }
        #expect(again == nil, "one inbox subscription")
        _ = m.ping(1, deadline: later)
        let (subscribers, waiters, _) = m.close()
        #expect(Set(subscribers) == ["A", "inbox"])
        #expect(waiters == [1])
        let subscribe = Result { () throws(BusClientError) in try m.subscribe(subject: "b", queue: nil, max: nil, subscriber: "B") }
        let establish = Result { () throws(BusClientError) in try m.connectionEstablished() }
        #expect(throws: BusClientError.closed) { try subscribe.get() }
        #expect(throws: BusClientError.closed) { try establish.get() }
        guard case .ignore = m.connectionLost(generation: 1, reconnect: true) else {
            Issue.record("closed")
            return
        }
    }

    // MARK: request/reply and deadlines

    @Test func aRequestIsAnsweredOnceAndTheFirstRequestSubscribesTheInbox() throws {
        var m = try connected()
        let token = m.makeRequestToken()
        let inbox = try m.startRequest(token: token, subject: "svc", requester: "R1", deadline: later, inbox: "_INBOX.x.*") { "inbox" }
        #expect(inbox == .subscribe(sid: Machine.inboxSID, subject: "_INBOX.x.*", queue: nil, max: nil))
        let second = m.makeRequestToken()
        #expect(second != token)
        let again = try m.startRequest(token: second, subject: "svc", requester: "R2", deadline: later, inbox: "_INBOX.x.*") { "inbox" }
        #expect(again == nil, "one inbox for all requests")
        #expect(m.finishRequest(token: token) == "R1")
        #expect(m.finishRequest(token: token) == nil, "a second reply answers nobody")
        #expect(m.finishRequest(token: "never") == nil)
        #expect(m.pendingRequestCount == 1)
    }

    @Test func requestsAndFlushesExpireAtTheirDeadlinesOnTheInjectedClock() throws {
        var m = try connected()
        let soon = m.makeRequestToken()
        _ = try m.startRequest(token: soon, subject: "fast", requester: "soon", deadline: t0 + .seconds(1), inbox: "_INBOX.x.*") { "inbox" }
        let slow = m.makeRequestToken()
        _ = try m.startRequest(token: slow, subject: "slow", requester: "slow", deadline: t0 + .seconds(10), inbox: "_INBOX.x.*") { "inbox" }
        _ = m.ping(1, deadline: t0 + .seconds(2))
        _ = m.ping(2, deadline: t0 + .seconds(20))
        #expect(m.nextDeadline == t0 + .seconds(1))

        let early = m.expire(now: t0 + .milliseconds(999))
        #expect(early.requests.isEmpty && early.pongs.isEmpty, "nothing is overdue before its deadline")
        let first = m.expire(now: t0 + .seconds(2))
        #expect(first.requests.map(\.requester) == ["soon"])
        #expect(first.requests.map(\.subject) == ["fast"])
        #expect(first.pongs == [1])
        #expect(m.nextDeadline == t0 + .seconds(10))
        #expect(m.finishRequest(token: soon) == nil, "a reply after the timeout answers nobody")

        // The timed-out flush's pong arrives late: it must not be taken for the next flush's.
        #expect(m.pongArrived() == nil)
        #expect(m.pongArrived() == 2)
        let rest = m.expire(now: t0 + .seconds(60))
        #expect(rest.requests.map(\.requester) == ["slow"])
        #expect(rest.pongs.isEmpty)
        #expect(m.nextDeadline == nil)
    }

    @Test func requestsOutliveALostConnectionButNotClose() throws {
        var m = try connected()
        let token = m.makeRequestToken()
        _ = try m.startRequest(token: token, subject: "svc", requester: "R", deadline: later, inbox: "_INBOX.x.*") { "inbox" }
        _ = m.connectionLost(generation: 1, reconnect: true)
        let (_, resubscribe) = try m.connectionEstablished()
        #expect(resubscribe.contains(.subscribe(sid: Machine.inboxSID, subject: "_INBOX.x.*", queue: nil, max: nil)), "the inbox is re-subscribed")
        #expect(m.pendingRequestCount == 1, "the reply may still come")
        let (_, _, requesters) = m.close()
        #expect(requesters == ["R"])
        #expect(m.nextDeadline == nil)
        let token2 = m.makeRequestToken()
        let refused = Result { () throws(BusClientError) in
            try m.startRequest(token: token2, subject: "svc", requester: "late", deadline: later, inbox: "_INBOX.x.*") { "inbox" }
        }
        #expect(throws: BusClientError.closed) { try refused.get() }
    }
}
