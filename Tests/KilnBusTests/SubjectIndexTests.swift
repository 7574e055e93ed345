import Testing

@testable import KilnBroker

@Suite struct SubjectIndexTests {
    func sub(_ subject: String, queue: String? = nil, sid: String = "1") -> Subscription {
        Subscription(connectionID: 1, sid: sid, subject: subject, queue: queue)
    }

    @Test func wildcardsMatch() {
        var index = SubjectIndex()
        let exact = sub("a.b.c")
        let star = sub("a.*.c")
        let full = sub("a.>")
        let all = sub(">")
        let other = sub("x.y")
        for s in [exact, star, full, all, other] { index.insert(s) }
        let m = index.match("a.b.c")
        #expect(Set(m.plain.map(ObjectIdentifier.init)) == Set([exact, star, full, all].map(ObjectIdentifier.init)))
        #expect(index.match("a").plain.map(ObjectIdentifier.init) == [ObjectIdentifier(all)])
        #expect(index.match("x.y").count == 2)
        #expect(index.match("q").count == 1)
    }

    @Test func queueGroupsAreSeparated() {
        var index = SubjectIndex()
        let q1 = sub("jobs", queue: "w")
        let q2 = sub("jobs", queue: "w")
        let q3 = sub("jobs", queue: "v")
        let p = sub("jobs")
        for s in [q1, q2, q3, p] { index.insert(s) }
        let m = index.match("jobs")
        #expect(m.plain.count == 1)
        #expect(m.queues["w"]?.count == 2)
        #expect(m.queues["v"]?.count == 1)
    }

    @Test func cacheIsInvalidatedOnChange() {
        var index = SubjectIndex()
        let a = sub("a.*")
        index.insert(a)
        #expect(index.match("a.b").count == 1)
        #expect(index.cachedSubjects == 1)
        let b = sub("a.b")
        index.insert(b)
        #expect(index.cachedSubjects == 0)
        #expect(index.match("a.b").count == 2)
        index.remove(a)
        #expect(index.match("a.b").count == 1)
        index.remove(b)
        #expect(index.match("a.b").isEmpty)
        #expect(index.count == 0)
    }

    @Test func removingUnknownIsHarmless() {
        var index = SubjectIndex()
        let r0 = index.remove(sub("a.b"))
        #expect(!r0)
        let s = sub("a.>")
        index.insert(s)
        let r1 = index.remove(s)
        let r2 = index.remove(s)
        #expect(r1 && !r2)
    }

    @Test func cacheIsBounded() {
        var index = SubjectIndex(cacheLimit: 8)
        index.insert(sub(">"))
        for i in 0..<100 { _ = index.match("s.\(i)") }
        #expect(index.cachedSubjects <= 8)
    }

    @Test func routerSpendsOneShotAtomically() {
        let router = MessageRouter()
        router.addConnection(1, recordsResponses: false)
        var subs: [Subscription] = []
        for i in 0..<10 {
            let s = Subscription(connectionID: 1, sid: "\(i)", subject: "work", queue: "q", max: 1)
            try? router.subscribe(s)
            subs.append(s)
        }
        var delivered = 0
        for _ in 0..<15 { delivered += router.publish(subject: "work", reply: nil, headers: nil, payload: .init()) }
        #expect(delivered == 10)
        #expect(subs.allSatisfy { $0.delivered == 1 && $0.isRemoved })
        #expect(router.subscriptionCount == 0)
    }
}
