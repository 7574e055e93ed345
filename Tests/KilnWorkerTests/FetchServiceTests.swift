import Foundation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import Testing

/// #28: workers get every input from the farm's fetch service (kiln-fetch) and check it; the service
/// serves only what a job's lock names, within its quotas, from a cache that survives restarts. Real
/// broker, real kiln-fetch and kiln-worker processes, a real registry and git server on loopback — and,
/// for the worker's checks, a hostile fetch service on the bus that sends wrong bytes.
@Suite(.serialized) struct FetchServiceTests {
    static func appBuild(_ files: [String: String]) async throws -> (String) -> BuildRequest {
        let archive = try await Fixtures.archive(files, root: "app", zip: false)
        return { job in BuildRequest(jobID: job, nonce: testNonce, sourceData: Data(archive).base64EncodedString(), sourceName: "app.tar.gz") }
    }

    /// A fetch service that answers every request with `answer` (headers, payload): a compromised or
    /// broken kiln-fetch, from the worker's side of the bus.
    static func hostileService(
        port: Int, answer: @escaping @Sendable (FetchKind, [UInt8]) -> ([String: String], [UInt8])
    ) async throws -> (BusClient, Task<Void, Never>) {
        let bus = try await BusClient.connect(.init(host: "127.0.0.1", port: port), logger: Logger(label: "hostile-fetch"))
        let requests = try bus.subscribe(Subjects.fetchAll)
        try await bus.flush()
        let task = Task {
            for await m in requests {
                guard let reply = m.reply, let (_, kind) = Subjects.parseFetch(m.subject) else { continue }
                let (headers, payload) = answer(kind, m.payloadBytes)
                try? await bus.publish(reply, payload: payload, headers: headers)  // a test double: a lost reply times the worker out
            }
        }
        return (bus, task)
    }

    @Test func aCacheThatSurvivesARestartAndAPoisonedEntryIsCaught() async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-fetch-restart")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let request = try await Self.appBuild(registry.appProject())
        // Each runBuild starts (and stops) its own kiln-fetch on the same state directory.
        let (cold, _, coldEnd, _) = try await runBuild(request, broker: broker, dir: dir, registry: registry.indexURL)
        #expect(coldEnd.type == .done, "\(coldEnd.message ?? "") \(cold.logLines.suffix(10))")
        #expect(CargoFetchTests.fetchNote(cold).contains("2 crates, 0 from the cache"), "\(CargoFetchTests.fetchNote(cold))")
        registry.stop()  // the registry is gone: only the cache can serve the second build
        let (warm, _, warmEnd, _) = try await runBuild(request, broker: broker, dir: dir, registry: registry.indexURL)
        #expect(warmEnd.type == .done, "\(warmEnd.message ?? "")")
        #expect(CargoFetchTests.fetchNote(warm).contains("2 crates, 2 from the cache"), "\(CargoFetchTests.fetchNote(warm))")
        // A poisoned entry with the registry gone: caught by the service's re-hash, and the build fails
        // in fetch naming the crate (it cannot be fetched again) instead of using the bytes.
        let leaf = try #require(registry.crates.first { $0.name == "kiln_leaf" })
        try FileManager.default.writeFile(atPath: dir.file("fetch/crates/\(leaf.checksum).crate"), contents: Data("poisoned".utf8))
        let (_, _, poisoned, _) = try await runBuild(request, broker: broker, dir: dir, registry: registry.indexURL)
        #expect(poisoned.type == .failed && poisoned.failurePhase == "fetch", "\(poisoned.message ?? "")")
        #expect(poisoned.message?.contains("kiln_leaf 0.1.0") == true, "\(poisoned.message ?? "")")
    }

    @Test func quotasAndPlansAreEnforcedWithClearFailures() async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let request = try await Self.appBuild(registry.appProject())
        let (_, _, tooMany, _) = try await runBuild(request, broker: broker, registry: registry.indexURL, fetchArgs: ["--max-crates-per-job", "1"])
        #expect(tooMany.type == .failed && tooMany.failurePhase == "fetch", "\(tooMany.message ?? "")")
        #expect(tooMany.message?.contains("at most 1 for one job") == true, "\(tooMany.message ?? "")")
        let (_, _, tooBig, _) = try await runBuild(request, broker: broker, registry: registry.indexURL, fetchArgs: ["--max-mb-per-job", "1", "--chunk-bytes", "4096"])
        // The two crates are a few KiB: within 1 MiB. The quota is tested at its edge by FetchLedgerTests;
        // here it must not get in the way of a build within it.
        #expect(tooBig.type == .done, "\(tooBig.message ?? "")")
    }

    @Test func aWorkerAskingForACrateItsLockDoesNotPinIsRefused() async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let dir = try TemporaryDirectory(prefix: "kiln-fetch-plan")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let service = try await FetchServiceProcess(broker: "kiln://127.0.0.1:\(broker.port)", state: dir.file("fetch"), registry: registry.indexURL)
        defer { service.stop() }
        let bus = try await BusClient.connect(.worker("wplan", port: broker.port), logger: Logger(label: "as-worker"))
        let leaf = try #require(registry.crates.first { $0.name == "kiln_leaf" })
        let mid = try #require(registry.crates.first { $0.name == "kiln_mid" })
        func ask(_ kind: FetchKind, _ body: some Encodable) async throws -> (String, String) {
            let r = try await bus.request(Subjects.fetch("wplan", kind), payload: Array(try JSONEncoder().encode(body)), timeout: .seconds(30))
            return (r.headers?["status"] ?? "", r.headers?["message"] ?? "")
        }
        let leafCrate = LockedCrate(name: leaf.name, version: leaf.version, sha256: leaf.checksum)
        let midCrate = LockedCrate(name: mid.name, version: mid.version, sha256: mid.checksum)
        #expect(try await ask(.crate, CrateChunkRequest(jobID: "j1", crate: leafCrate, part: .crate, offset: 0)).0 == "403", "nothing before a plan")
        #expect(try await ask(.plan, FetchPlan(jobID: "j1", crates: [leafCrate])).0 == "200")
        #expect(try await ask(.crate, CrateChunkRequest(jobID: "j1", crate: leafCrate, part: .crate, offset: 0)).0 == "200")
        let (status, message) = try await ask(.crate, CrateChunkRequest(jobID: "j1", crate: midCrate, part: .crate, offset: 0))
        #expect(status == "403" && message.contains("not in job j1's Cargo.lock"), "\(status) \(message)")
        #expect(try await ask(.plan, FetchPlan(jobID: "j1", crates: [midCrate])).0 == "403", "a plan cannot be extended")
        #expect(try await ask(.crate, CrateChunkRequest(jobID: "j2", crate: leafCrate, part: .crate, offset: 0)).0 == "403", "one job per worker")
        #expect(try await eventually(within: .seconds(60)) { (await service.metric(#"kiln_fetch_refused_total{reason="forbidden"}"#) ?? 0) >= 4 })
        await bus.close()
    }

    /// #28: a directory given as the registry says what to use instead, at start.
    @Test func aDirectoryGivenAsTheRegistryIsRefusedAtStartNamingCargoVendor() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-fetch-dir")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let p = try await LaunchedProcess(
            BuiltProducts.path("kiln-fetch"), ["--broker", "kiln://127.0.0.1:\(broker.port)", "--state", dir.file("fetch"), "--cargo-registry", dir.path])
        #expect(try await p.waitForExit() != 0)
        #expect(p.output.joined(separator: "\n").contains("kiln-worker --cargo-vendor"), "\(p.output)")
    }

    @Test func unstampedRequestsAreRefusedByDefault() async throws {
        let dir = try TemporaryDirectory(prefix: "kiln-fetch-stamp")
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        let service = try await FetchServiceProcess(broker: "kiln://127.0.0.1:\(broker.port)", state: dir.file("fetch"), unstamped: false)
        defer { service.stop() }
        let bus = try await BusClient.connect(.worker("w1", port: broker.port), logger: Logger(label: "unstamped"))
        let r = try await bus.request(
            Subjects.fetch("w1", .plan), payload: Array(try JSONEncoder().encode(FetchPlan(jobID: "j", crates: []))), timeout: .seconds(30))
        #expect(r.headers?["status"] == "403" && r.headers?["message"]?.contains("no broker-stamped sender") == true, "\(r.headers ?? [:])")
        await bus.close()
    }

    @Test(arguments: ["crate", "git-garbage", "git-other-commit", "index-line"])
    func wrongBytesFromTheFetchServiceAreRefusedInFetchNamingTheInput(what: String) async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let git = try await GitFixture()
        defer { git.stop() }
        let pinned = try await git.createRepository("hello", files: Fixtures.helloCrate())
        _ = try await git.createRepository("other", files: Fixtures.helloCrate(name: "other"))
        let broker = try await BrokerProcess()
        defer { broker.stop() }
        // A real pack of another repository's commit, for the "right format, wrong commit" case.
        let otherDir = try TemporaryDirectory(prefix: "kiln-other-pack")
        let real = try await FetchServiceProcess(broker: "kiln://127.0.0.1:\(broker.port)", state: otherDir.file("fetch"))
        let asWorker = try await BusClient.connect(.worker("wother", port: broker.port), logger: Logger(label: "w"))
        let otherPack = try await asWorker.request(
            Subjects.fetch("wother", .git), payload: Array(try JSONEncoder().encode(GitFetchRequest(jobID: "x", url: git.url("other"), ref: "main", offset: 0))),
            timeout: .seconds(60))
        real.stop()
        await asWorker.close()
        let otherBytes = otherPack.payloadBytes
        let otherCommit = otherPack.headers?["commit"] ?? ""
        #expect(otherPack.headers?["status"] == "200" && !otherBytes.isEmpty)
        let (bus, task) = try await Self.hostileService(port: broker.port) { kind, body in
            let ok = ["status": "200"]
            switch (kind, what) {
            case (.plan, _): return (ok, [])
            case (.crate, "crate"):
                let r = try? JSONDecoder().decode(CrateChunkRequest.self, from: Data(body))
                if r?.part == .indexLine {
                    let line = registry.crates.first { $0.name == r?.crate.name }.map {
                        #"{"name":"\#($0.name)","vers":"\#($0.version)","deps":[],"cksum":"\#($0.checksum)","features":{},"yanked":false}"#
                    }
                    return (ok.merging(["size": String(line?.utf8.count ?? 0)]) { $1 }, Array((line ?? "").utf8))
                }
                return (ok.merging(["size": "7"]) { $1 }, Array("trojan!".utf8))
            case (.crate, _):
                // index-line case: a line for another version (the crate bytes never get this far).
                let r = try? JSONDecoder().decode(CrateChunkRequest.self, from: Data(body))
                let c = registry.crates.first { $0.name == r?.crate.name }
                let real = (try? Data(contentsOf: URL(fileURLWithPath: registry.root.file("dl/\(c?.name ?? "")/\(c?.version ?? "")/download")))) ?? Data()
                if r?.part == .crate { return (ok.merging(["size": String(real.count)]) { $1 }, Array(real)) }
                let line = #"{"name":"\#(c?.name ?? "")","vers":"9.9.9","deps":[],"cksum":"\#(c?.checksum ?? "")"}"#
                return (ok.merging(["size": String(line.utf8.count)]) { $1 }, Array(line.utf8))
            case (.git, "git-garbage"):
                return (ok.merging(["size": "16", "commit": pinned]) { $1 }, Array("PACK-not-really!".utf8))
            case (.git, _):
                return (ok.merging(["size": String(otherBytes.count), "commit": what == "git-other-commit" ? pinned : otherCommit]) { $1 }, otherBytes)
            default:
                return (["status": "404", "message": "no"], [])
            }
        }
        defer {
            task.cancel()
            Task { await bus.close() }
        }
        let request: (String) -> BuildRequest
        if what.hasPrefix("git") {
            request = { BuildRequest(jobID: $0, nonce: testNonce, repoURL: git.url("hello"), repoRef: pinned) }
        } else {
            request = try await Self.appBuild(registry.appProject())
        }
        let (_, _, end, _) = try await runBuild(request, broker: broker, withFetchService: false)
        #expect(end.type == .failed, "\(what): \(end.message ?? "")")
        switch what {
        case "crate":
            #expect(end.failurePhase == "fetch" && end.message?.contains("does not match the checksum Cargo.lock pins") == true, "\(end.message ?? "")")
            #expect(end.message?.contains("kiln_") == true, "names the crate: \(end.message ?? "")")
        case "index-line":
            #expect(end.failurePhase == "fetch" && end.message?.contains("does not name that locked crate") == true, "\(end.message ?? "")")
        case "git-garbage":
            #expect(end.failurePhase == "source" && end.message?.contains("is not a valid git pack") == true, "\(end.message ?? "")")
        default:
            // The pack is valid but holds another commit than the one the request pinned.
            #expect(end.failurePhase == "source" && end.message?.contains("does not hold commit \(pinned)") == true, "\(end.message ?? "")")
        }
    }
}
