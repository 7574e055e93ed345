import KilnTestSupport
import Testing

@testable import KilnBusClient

/// The bus client's bookkeeping, driven event by event with no socket.
@Suite struct BusClientStateMachineTests {
    typealias Machine = BusClientStateMachine<String, Int>

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
        let first = m.ping(1)
        let second = m.ping(2)
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
        let third = m.ping(3)
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
        _ = m.ping(7)
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
        _ = m.ping(1)
        let (subscribers, waiters) = m.close()
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
}
