import Foundation
import KilnBroker
import KilnBus
import KilnBusClient
import KilnTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Black-box routing tests over real TCP against a broker on port 0.
@Suite struct BrokerRoutingTests {
    @Test func wildcards() async throws {
        try await withBroker { _, port in
            let sub = try await client(port)
            let pub = try await client(port)
            let star = try sub.subscribe("a.*")
            let full = try sub.subscribe("a.>")
            let exact = try sub.subscribe("a.b")
            let other = try sub.subscribe("b.*")
            try await sub.flush()
            try await pub.publish("a.b", string: "one")
            try await pub.publish("a.b.c", string: "two")
            try await pub.flush()
            let s = await collect(star, count: 1)
            let f = await collect(full, count: 2)
            let e = await collect(exact, count: 1)
            #expect(s.map(\.payloadString) == ["one"])
            #expect(f.map(\.payloadString) == ["one", "two"])
            #expect(f.map(\.subject) == ["a.b", "a.b.c"])
            #expect(e.map(\.payloadString) == ["one"])
            let o = await collect(other, count: 1, timeout: .milliseconds(200))
            #expect(o.isEmpty)
            await sub.close()
            await pub.close()
        }
    }

    @Test func queueGroupDistribution() async throws {
        try await withBroker { _, port in
            let a = try await client(port)
            let b = try await client(port)
            let pub = try await client(port)
            let members = [
                try a.subscribe("jobs", queue: "g"), try a.subscribe("jobs", queue: "g"),
                try b.subscribe("jobs", queue: "g"), try b.subscribe("jobs", queue: "g"),
            ]
            let plain = try b.subscribe("jobs")
            try await a.flush()
            try await b.flush()
            let n = 400
            for i in 0..<n { try await pub.publish("jobs", string: "\(i)") }
            try await pub.flush()
            let everything = await collect(plain, count: n)
            #expect(everything.count == n)
            // Queue members: total exactly n, every member got some.
            let counts = await withTaskGroup(of: [String].self) { group in
                for m in members { group.addTask { await collect(m, count: n, timeout: .milliseconds(700)).map(\.payloadString) } }
                var all: [[String]] = []
                for await r in group { all.append(r) }
                return all
            }
            let total = counts.flatMap { $0 }
            #expect(total.count == n)
            #expect(Set(total).count == n)
            #expect(counts.allSatisfy { !$0.isEmpty }, "\(counts.map(\.count))")
            await a.close()
            await b.close()
            await pub.close()
        }
    }

    /// 600 one-shot queue subscribers on 60 connections, 500 requests from 5 connections at once:
    /// every request answered by exactly one subscriber, none answered twice, none lost.
    @Test func exactlyOnceUnderContention() async throws {
        try await withBroker { broker, port in
            let connections = 60
            let perConnection = 10
            let requesters = 5
            let perRequester = 100
            var responders: [BusClient] = []
            for _ in 0..<connections { responders.append(try await client(port)) }
            let received = NIOLockedValueBox<[String: [String]]>([:])  // responder id -> request ids
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (c, conn) in responders.enumerated() {
                    for s in 0..<perConnection {
                        let sub = try conn.subscribe("kiln.build.request", queue: "workers", max: 1)
                        let id = "\(c)-\(s)"
                        group.addTask {
                            for await msg in sub {
                                received.withLockedValue { $0[id, default: []].append(msg.payloadString) }
                                if let reply = msg.reply { try await conn.publish(reply, string: id) }
                            }
                        }
                    }
                    try await conn.flush()
                }
                #expect(broker.router.subscriptionCount == connections * perConnection)
                var pubs: [BusClient] = []
                for _ in 0..<requesters { pubs.append(try await client(port)) }
                let answers = NIOLockedValueBox<[String: String]>([:])
                try await withThrowingTaskGroup(of: Void.self) { reqs in
                    for (r, pub) in pubs.enumerated() {
                        for i in 0..<perRequester {
                            reqs.addTask {
                                let reply = try await pub.request("kiln.build.request", payload: Array("\(r)/\(i)".utf8), timeout: .seconds(20))
                                answers.withLockedValue { $0["\(r)/\(i)"] = reply.payloadString }
                            }
                        }
                    }
                    try await reqs.waitForAll()
                }
                let total = requesters * perRequester
                let byResponder = received.withLockedValue { $0 }
                let answered = answers.withLockedValue { $0 }
                #expect(answered.count == total)
                #expect(byResponder.values.allSatisfy { $0.count == 1 }, "a one-shot subscriber got two messages")
                let requestIDs = byResponder.values.flatMap { $0 }
                #expect(requestIDs.count == total)
                #expect(Set(requestIDs).count == total, "a request reached two subscribers")
                #expect(Set(answered.values).count == total, "two requests answered by the same subscriber")
                // What is left: the unspent one-shots plus each requester's reply inbox.
                #expect(broker.router.subscriptionCount == connections * perConnection - total + requesters)
                // Spend the rest, then the next request finds nobody.
                let leftover = connections * perConnection - total
                for i in 0..<leftover { _ = try await pubs[0].request("kiln.build.request", payload: Array("x\(i)".utf8)) }
                await #expect(throws: BusClientError.noResponders(subject: "kiln.build.request")) {
                    _ = try await pubs[0].request("kiln.build.request", payload: [UInt8]())
                }
                for p in pubs { await p.close() }
                for r in responders { await r.close() }
                group.cancelAll()
            }
        }
    }

    @Test func noRespondersIsImmediate() async throws {
        try await withBroker { _, port in
            let c = try await client(port)
            let start = ContinuousClock.now
            // No responders, not a timeout: the error says which, and it comes long before the timeout
            // (the bound leaves room for a loaded CI machine: 6 s were measured there).
            await #expect(throws: BusClientError.noResponders(subject: "nobody.home")) {
                _ = try await c.request("nobody.home", payload: Array("x".utf8), timeout: .seconds(60))
            }
            #expect(ContinuousClock.now - start < .seconds(30))
            await c.close()
        }
    }

    @Test func requestTimeout() async throws {
        try await withBroker { _, port in
            let c = try await client(port)
            let silent = try c.subscribe("silent")
            try await c.flush()
            await #expect(throws: BusClientError.timeout(subject: "silent")) {
                _ = try await c.request("silent", payload: [UInt8](), timeout: .milliseconds(200))
            }
            _ = silent
            await c.close()
        }
    }

    @Test func unsubscribeWithMax() async throws {
        try await withBroker { broker, port in
            let c = try await client(port)
            let sub = try c.subscribe("t")
            try await sub.unsubscribe(after: 3)
            try await c.flush()
            for i in 0..<10 { try await c.publish("t", string: "\(i)") }
            try await c.flush()
            let got = await collect(sub, count: 10, timeout: .seconds(2))
            #expect(got.map(\.payloadString) == ["0", "1", "2"])
            #expect(broker.router.subscriptionCount == 0)
            await c.close()
        }
    }

    @Test func largePayloadPassesThroughUntouched() async throws {
        try await withBroker { _, port in
            let c = try await client(port)
            let sub = try c.subscribe("big")
            try await c.flush()
            // Eight random bytes at a time: a megabyte of `UInt8.random` takes seconds in a debug build,
            // holding a cooperative thread all the while (#27).
            var rng = SystemRandomNumberGenerator()
            var payload = [UInt8](repeating: 0, count: 1 << 20)
            payload.withUnsafeMutableBytes { raw in
                for offset in stride(from: 0, to: raw.count, by: 8) { raw.storeBytes(of: rng.next() as UInt64, toByteOffset: offset, as: UInt64.self) }
            }
            try await c.publish("big", payload: payload)
            let got = await collect(sub, count: 1)
            #expect(got.first?.payloadBytes == payload)
            await #expect(throws: BusClientError.self) {
                try await c.publish("big", payload: [UInt8](repeating: 0, count: 9 << 20))
            }
            await c.close()
        }
    }

    @Test func monitorEndpoints() async throws {
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let c = try await client(broker.port)
        try await c.publish("m", string: "x")
        try await c.flush()
        let health = try await HTTPGet.get(port: broker.monitorPort, path: "/healthz")
        #expect(health.status == 200)
        let metrics = try await HTTPGet.get(port: broker.monitorPort, path: "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.body.contains("kiln_broker_connections 1"))
        #expect(metrics.body.contains("kiln_broker_messages_in_total 1"))
        await c.close()
    }
}
