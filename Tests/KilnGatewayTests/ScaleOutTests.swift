import Foundation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import Synchronization
import Testing

/// #15 items 3 and 4 on the whole scaled-out farm (three clustered nats-servers, PostgreSQL, two
/// gateways sharing it and one data directory): any gateway answers for any job, and losing a
/// gateway, a bus member or the database for a moment loses nothing.
@Suite(.serialized) struct ScaleOutTests {
    /// `kiln verify` on a result downloaded from `gateway`.
    func verify(_ farm: ScaleOutFarm, _ gateway: GatewayHTTP, _ id: String, nonce: String) async throws {
        let file = farm.dir.file("\(id).tar.gz")
        #expect(try await gateway.download("/build/\(id)/result", to: file).status == 200)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", nonce, "--key", farm.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
    }

    @Test func submittedThroughOneGatewayFollowedAndDownloadedThroughTheOther() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let id = try await farm.a.submit(Fixtures.helloCrate(), nonce: "5ca1e0a1")
        async let followed = farm.b.follow(id)
        try await farm.startWorker(preferring: 2)
        let (events, ended) = await followed
        #expect(
            ended && events.isCompleteStream,
            "\(events.map { "\($0.id ?? 0) \($0.event ?? "")" }) \(lastFollowError.withLock { $0 })\n\(farm.logs(about: id))")
        #expect(events.last?.event == "done")
        let status = try await farm.b.waitForStatus(id, ["ready", "error"])
        #expect(status["status"] as? String == "ready", "\(status)")
        #expect(try await farm.a.status(id)["status"] as? String == "ready")
        try await verify(farm, farm.b, id, nonce: "5ca1e0a1")
    }

    /// The gateway ingesting a build is killed mid-build: the other adopts the job (after the lease),
    /// asks the worker to replay, and a client that followed the dead gateway resumes on the other with
    /// Last-Event-ID and misses nothing.
    @Test func aGatewayKilledMidBuildLosesNothing() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let (id, ingesting, dead, survivor) = try await farm.startSlowBuild(seconds: 8, nonce: "5ca1e0a2")
        // Follow on the ingesting gateway until the build is under way, then kill it.
        let phases = Recorded<String>()
        async let first = dead.follow(id) { event in
            if event.event == "phase" { phases.append(event.data) }
        }
        #expect(await eventually(within: .seconds(60)) { phases.all.count >= 2 }, "no build phases seen")
        farm.killGateway(ingesting)
        let (before, endedBefore) = await first
        #expect(!endedBefore && !before.isEmpty)
        let (after, ended) = await survivor.follow(id, lastEventID: before.last?.id)
        let all = before + after
        #expect(ended && all.isCompleteStream, "\(all.map { "\($0.id ?? 0) \($0.event ?? "")" })")
        #expect(all.last?.event == "done")
        #expect(try await survivor.waitForStatus(id, ["ready", "error"])["status"] as? String == "ready")
        let adopter = farm.gateways[1 - ingesting].process.output
        #expect(adopter.contains { $0.contains("building job adopted") && $0.contains(id) }, "\(adopter.suffix(20))")
        try await verify(farm, survivor, id, nonce: "5ca1e0a2")
    }

    /// The bus member that gateway A and the worker are connected to dies mid-build: both move to
    /// another member; the build finishes and its stream is whole.
    @Test func aBusMemberKilledMidBuild() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let id = try await farm.a.submit(slowCrate(seconds: 15), nonce: "5ca1e0a3")
        try await farm.startWorker(preferring: 0)
        _ = try await farm.a.waitForStatus(id, ["building"], timeout: .seconds(60))
        farm.nats[0].stop()
        let (events, ended) = await farm.a.follow(id)
        #expect(ended && events.isCompleteStream, "\(events.map { "\($0.id ?? 0) \($0.event ?? "")" })")
        #expect(try await farm.b.waitForStatus(id, ["ready", "error"])["status"] as? String == "ready")
        // And the farm goes on: the next build, too.
        let next = try await farm.b.submit(Fixtures.helloCrate(message: "after the member died"), nonce: "5ca1e0a4")
        try await farm.startWorker(preferring: 1)
        #expect(try await farm.a.waitForStatus(next, ["ready", "error"])["status"] as? String == "ready")
    }

    /// PostgreSQL restarts mid-build (every connection broken, down for a second): the gateways
    /// reconnect, the worker's events and result chunks that failed are sent again, the build ends ready.
    @Test func postgresRestartedMidBuild() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let id = try await farm.a.submit(slowCrate(seconds: 15), nonce: "5ca1e0a5")
        try await farm.startWorker(preferring: 1)
        _ = try await farm.a.waitForStatus(id, ["building"], timeout: .seconds(60))
        try await farm.database.restart(downFor: .seconds(1))
        let status = try await farm.b.waitForStatus(id, ["ready", "error", "waiting"], timeout: .seconds(120)) {
            $0["status"] as? String == "waiting" && $0["attempt"] as? Int == 1
        }
        #expect(status["status"] as? String == "ready", "\(status)\n\(farm.logs(about: id))")
        let (events, ended) = await farm.a.follow(id)
        #expect(ended && events.isCompleteStream, "\(events.map { "\($0.id ?? 0) \($0.event ?? "")" })")
        try await verify(farm, farm.a, id, nonce: "5ca1e0a5")
    }

    /// 200 jobs submitted at once, half through each gateway, to stand-in workers on all three bus
    /// members: each is accepted exactly once, each ends ready, and each one's stream is whole.
    @Test func twoHundredJobsAcrossTwoGatewaysEachDispatchedOnce() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let accepted = Recorded<String>()
        let standIns = try await farm.runStandIns(8, accepted: accepted)
        defer { standIns.cancel() }
        let crate = Fixtures.helloCrate()
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for lane in 0..<20 {
                group.addTask {
                    var mine: [String] = []
                    for _ in 0..<10 { mine.append(try await (lane % 2 == 0 ? farm.a : farm.b).submit(crate)) }
                    return mine
                }
            }
            var all: [String] = []
            for try await some in group { all += some }
            return all
        }
        #expect(Set(ids).count == 200)
        let started = ContinuousClock.now
        let allReady = await eventually(within: .seconds(180), every: .milliseconds(500)) {
            guard let page = try? await farm.a.http(.GET, "/builds?status=ready&limit=200") else { return false }
            return (page.json["builds"] as? [Any])?.count == 200
        }
        #expect(allReady)
        print("200 jobs over two gateways and 8 stand-in workers: all ready \(ContinuousClock.now - started) after the last submission")
        let counts = Dictionary(accepted.all.map { ($0, 1) }, uniquingKeysWith: +)
        #expect(counts.count == 200 && counts.values.allSatisfy { $0 == 1 }, "accepted twice: \(counts.filter { $0.value > 1 })")
        for (i, id) in ids.enumerated() {
            let (events, ended) = await (i % 2 == 0 ? farm.b : farm.a).follow(id, timeout: .seconds(10))
            #expect(ended && events.isCompleteStream && events.count == 5, "\(id): \(events.map { "\($0.id ?? 0) \($0.event ?? "")" })")
        }
    }

    /// A dispatch that reaches a subscription that will never answer (spent, or its worker gone, on
    /// another cluster member) is not lost: the gateway's acceptance times out and the job goes to the
    /// next worker.
    @Test func aRequestThatReachesASpentSubscriptionIsDispatchedAgain() async throws {
        let farm = try await ScaleOutFarm(gatewayArguments: ["--ack-timeout", "2"])
        defer { farm.stop() }
        // A one-shot queue subscription on member 2 that swallows the request it gets.
        let swallower = try await BusClient.connect(try BusClient.Configuration(url: farm.nats[2].url), logger: Logger(label: "swallower"))
        let spent = try swallower.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await swallower.flush()
        defer { Task { await swallower.close() } }
        // Interest reaches the gateways' members over the routes.
        try await Task.sleep(for: .milliseconds(300))
        let id = try await farm.a.submit(Fixtures.helloCrate(), nonce: "5ca1e0a6")
        var requests = spent.makeAsyncIterator()
        let swallowed = await requests.next()
        #expect(swallowed.map { String(decoding: $0.payloadBytes, as: UTF8.self).contains(id) } == true)
        let accepted = Recorded<String>()
        let standIns = try await farm.runStandIns(1, accepted: accepted)
        defer { standIns.cancel() }
        #expect(try await farm.b.waitForStatus(id, ["ready", "error"], timeout: .seconds(60))["status"] as? String == "ready")
        #expect(accepted.all == [id])
    }

    /// Anyone on the bus can publish `kiln.gateway.stored.<job>` (NATS has no sender stamping). A
    /// forged notice must never change what a follower on another gateway sees: huge, zero, negative
    /// and non-numeric seqs, oversized payloads, notices claiming to come from the follower's own
    /// gateway and notices for jobs that do not exist, all while the build streams. The follower's
    /// stream is still exactly the stored one, 1…n, ending `done`.
    @Test func forgedStoredNoticesChangeNothingAFollowerSees() async throws {
        let farm = try await ScaleOutFarm()
        defer { farm.stop() }
        let (id, _, owner, follower) = try await farm.startSlowBuild(seconds: 4, nonce: "5ca1e0a7")
        let forger = try await BusClient.connect(try BusClient.Configuration(url: farm.nats[1].url), logger: Logger(label: "forger"))
        defer { Task { await forger.close() } }
        let forging = Task {
            let seqs = ["9223372036854775807", "1000000", "0", "-3", "1e9", "abc", String(repeating: "9", count: 25), "2", "1"]
            while !Task.isCancelled {
                for seq in seqs {
                    let from = ["gw-forged", farm.instanceID(0), farm.instanceID(1)].randomElement()!
                    try? await forger.publish(Subjects.gatewayStored(id), string: seq, headers: ["kiln-gateway": from])
                    try? await forger.publish(Subjects.gatewayStored("j\(UInt64.random(in: 0...UInt64.max))"), string: seq)
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        defer { forging.cancel() }
        let (events, ended) = await follower.follow(id, timeout: .seconds(60))
        forging.cancel()
        #expect(ended && events.isCompleteStream, "\(events.map { "\($0.id ?? 0) \($0.event ?? "")" })\n\(farm.logs(about: id))")
        #expect(events.last?.event == "done")
        // Exactly what the store holds, as the ingesting gateway replays it.
        let (replayed, _) = await owner.follow(id)
        #expect(events.map(\.id) == replayed.map(\.id) && events.map(\.data) == replayed.map(\.data))
        try await verify(farm, follower, id, nonce: "5ca1e0a7")
    }
}
