import KilnBroker
import KilnBus
import NIOCore
import Testing

@Suite struct ConnectionStateMachineTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func machine(_ mode: Authenticator.Mode = .none, ping: TimeAmount = .seconds(20)) -> ConnectionStateMachine {
        ConnectionStateMachine(configuration: .init(authenticator: Authenticator(mode), pingInterval: ping), now: t0)
    }

    @Test func anythingBeforeConnectIsRefusedWhenAuthRequired() {
        var m = machine(.token("s3cret"))
        let action = m.frameReceived(.pub("a"), now: t0)
        guard case .fail(let e) = action else {
            Issue.record("expected fail")
            return
        }
        #expect(e.code == 401 && e.isFatal)
        #expect(m.state == .closed)
    }

    @Test func tokenAuth() {
        var good = machine(.token("s3cret"))
        var c = BusHeader(op: .connect)
        c.token = "s3cret"
        #expect(good.frameReceived(c, now: t0) == .none)
        #expect(good.frameReceived(.pub("a"), now: t0) == .publish(subject: "a", reply: nil, headers: nil))

        var bad = machine(.token("s3cret"))
        c.token = "nope"
        guard case .fail(let e) = bad.frameReceived(c, now: t0) else {
            Issue.record("expected fail")
            return
        }
        #expect(e.code == 401)
        #expect(e.message.contains("wrong token"))
    }

    @Test func permissions() {
        let perms = SubjectPermissions(
            publish: .init(allow: ["kiln.>"], deny: ["kiln.secret"]),
            subscribe: .init(allow: ["kiln.*.events"]), allowResponses: true)
        var m = machine(.users([.init(user: "w", password: "p", permissions: perms)]))
        var c = BusHeader(op: .connect)
        c.user = "w"
        c.password = "p"
        #expect(m.frameReceived(c, now: t0) == .none)
        #expect(m.frameReceived(.pub("kiln.x"), now: t0) == .publish(subject: "kiln.x", reply: nil, headers: nil))
        // Denied by the list but allow_responses: the router decides.
        #expect(m.frameReceived(.pub("kiln.secret"), now: t0) == .publishIfResponseAllowed(subject: "kiln.secret", reply: nil, headers: nil))
        #expect(m.frameReceived(.sub("kiln.1.events", sid: "1"), now: t0) == .subscribe(sid: "1", subject: "kiln.1.events", queue: nil, max: nil))
        guard case .fail(let e) = m.frameReceived(.sub("kiln.>", sid: "2"), now: t0) else {
            Issue.record("expected fail")
            return
        }
        #expect(e.code == 403 && !e.isFatal)
    }

    @Test func validation() {
        var m = machine()
        func failure(_ h: BusHeader) -> String? {
            if case .fail(let e) = m.frameReceived(h, now: t0) { return e.message }
            return nil
        }
        #expect(failure(BusHeader(op: .pub))?.contains("needs a 'subject'") == true)
        #expect(failure(.pub("a.*"))?.contains("wildcards are not allowed") == true)
        #expect(failure(.pub("a..b"))?.contains("empty token") == true)
        #expect(failure(.pub("a b"))?.contains("printable ASCII") == true)
        #expect(failure(.sub("a", sid: ""))?.contains("sid") == true)
        #expect(failure(.sub("a", sid: "1", max: 0))?.contains("positive") == true)
        #expect(failure(BusHeader(op: .msg))?.contains("sent by the broker") == true)
        #expect(failure(.pub("a", reply: "r.*"))?.contains("invalid reply subject") == true)
    }

    @Test func keepaliveClosesAfterTwoUnansweredPings() {
        var m = machine(ping: .seconds(1))
        #expect(m.keepaliveTick(now: t0 + .milliseconds(500)) == .none)
        #expect(m.keepaliveTick(now: t0 + .seconds(1)) == .sendPing)
        #expect(m.keepaliveTick(now: t0 + .seconds(2)) == .sendPing)
        #expect(m.keepaliveTick(now: t0 + .seconds(3)) == .close(.staleConnection()))
        #expect(m.state == .closed)
    }

    @Test func pongOrTrafficKeepsConnectionAlive() {
        var m = machine(ping: .seconds(1))
        #expect(m.keepaliveTick(now: t0 + .seconds(1)) == .sendPing)
        #expect(m.keepaliveTick(now: t0 + .seconds(2)) == .sendPing)
        _ = m.frameReceived(BusHeader(op: .pong), now: t0 + .milliseconds(2500))
        #expect(m.keepaliveTick(now: t0 + .seconds(3)) == .none)
        #expect(m.keepaliveTick(now: t0 + .seconds(4)) == .sendPing)
        _ = m.frameReceived(.pub("a"), now: t0 + .milliseconds(4100))
        #expect(m.keepaliveTick(now: t0 + .seconds(5)) == .none)
    }

    @Test func constantTimeEquals() {
        #expect(Authenticator.constantTimeEquals("abc", "abc"))
        #expect(!Authenticator.constantTimeEquals("abc", "abd"))
        #expect(!Authenticator.constantTimeEquals("abc", "abcd"))
        #expect(!Authenticator.constantTimeEquals("", "a"))
    }
}

extension ConnectionStateMachineTests {
    @Test func aConnectionThatNeverSendsConnectIsClosedAtTheHandshakeDeadline() {
        var m = ConnectionStateMachine(configuration: .init(authenticator: Authenticator(.token("s")), handshakeTimeout: .seconds(5)), now: t0)
        #expect(m.handshakeTick(now: t0 + .seconds(4)) == .none)
        // Pings and trickled bytes do not extend it; only connect does.
        _ = m.invalidFrame(.badRequest("partial"), now: t0 + .seconds(1))
        var fresh = ConnectionStateMachine(configuration: .init(authenticator: Authenticator(.token("s")), handshakeTimeout: .seconds(5)), now: t0)
        guard case .close(let e) = fresh.handshakeTick(now: t0 + .seconds(5)) else {
            Issue.record("expected close")
            return
        }
        #expect(e.code == 408 && e.isFatal && e.message.contains("connect"))
        #expect(fresh.state == .closed)
    }

    @Test func anAuthenticatedConnectionIsNotTouchedByTheHandshakeDeadline() {
        var m = ConnectionStateMachine(configuration: .init(authenticator: Authenticator(.token("s")), handshakeTimeout: .seconds(5)), now: t0)
        var c = BusHeader(op: .connect)
        c.token = "s"
        _ = m.frameReceived(c, now: t0 + .seconds(1))
        #expect(m.handshakeTick(now: t0 + .seconds(60)) == .none)
        #expect(!m.isAwaitingConnect)
        // Without auth there is no handshake to wait for.
        var open = machine()
        #expect(open.handshakeTick(now: t0 + .seconds(60)) == .none)
    }
}
