import Foundation
import KilnArchive
import KilnAttestation
import KilnBusClient
import KilnMessages
import KilnTestSupport
import Logging
import NIOHTTP1
import Testing

/// The gateway with a real broker and real workers, all as processes.
@Suite(.serialized) struct GatewayEndToEndTests {
    @Test func buildFollowDownloadVerify() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let id = try await c.submit(Fixtures.helloCrate(), nonce: "0badc0de")
        // Subscribe before any worker exists: what follows is live.
        async let live = Task.detached { try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 120) }.value
        #expect(await eventually { (try? await HTTPGet.get(port: c.gateway.port, path: "/metrics").body.contains("kiln_gateway_sse_clients 1.0")) == true })
        #expect((try await c.status(id))["status"] as? String == "waiting")
        try await c.startWorker()
        let stream = try await live
        #expect(stream.status == 200 && stream.ended)
        #expect(stream.events.map(\.id) == Array(1...stream.events.count).map { Optional($0) }, "every seq once, in order")
        #expect(stream.events.first?.event == "accepted")
        let done = try #require(stream.events.last)
        #expect(done.event == "done")
        let doneJSON = try JSONSerialization.jsonObject(with: Data(done.data.utf8)) as! [String: Any]
        let status = try await c.waitForStatus(id, ["ready"])
        #expect(status["worker_id"] != nil && status["duration_ms"] != nil && status["retention_expires_at"] != nil)
        // Download: sha256 equals the done event's; ETag; 304.
        let file = c.dir.file("result.tar.gz")
        let dl = try await c.download("/build/\(id)/result", to: file)
        #expect(dl.status == 200)
        let digest = try FileDigest.of(file: file)
        #expect(digest.sha256 == doneJSON["sha256"] as? String)
        #expect(dl.headers.first(name: "ETag") == "\"\(digest.sha256)\"")
        #expect(dl.headers.first(name: "Content-Length") == String(digest.size))
        #expect(dl.headers.first(name: "Content-Disposition")?.contains("attachment") == true)
        let again = try await c.http(.GET, "/build/\(id)/result", headers: [("If-None-Match", "\"\(digest.sha256)\"")])
        #expect(again.status == 304)
        // Sent with sendfile: the same bytes again (on a kept-alive connection), then a normal request after it.
        let second = c.dir.file("result2.tar.gz")
        #expect(try await c.download("/build/\(id)/result", to: second).status == 200)
        #expect(try FileDigest.of(file: second).sha256 == digest.sha256)
        #expect(try await c.http(.GET, "/build/\(id)").status == 200)
        // Verify with the keys the gateway serves.
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "0badc0de", "--gateway", c.gateway.url, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
        // The gateway vouches for itself: the CLI says which key it trusted that way.
        let farmKey = try SigningKey(contentsOf: c.keyFile).publicKey.keyID
        #expect(v.output.contains { $0.contains("warning: trusting key \(farmKey)") && $0.contains("vouches for itself") }, "\(v.output)")
        // Replayed stream after the fact, and resuming from the middle with Last-Event-ID.
        let replay = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(replay.events == stream.events)
        let middle = stream.events.count / 2
        let resumed = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", lastEventID: middle, timeout: 60)
        #expect(resumed.events.map(\.id) == Array((middle + 1)...stream.events.count).map { Optional($0) })
        #expect(resumed.ended)
        // The worker took one build and exited.
        #expect(try await c.workers[0].waitForExit(timeout: .seconds(30)) == 0)
    }

    @Test func multipartAndGitSubmissions() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let git = try await GitFixture()
        defer { git.stop() }
        let commit = try await git.createRepository("hello", files: Fixtures.helloCrate())
        let archive = try await Fixtures.archive(Fixtures.helloCrate(name: "multi"), root: "multi", zip: true)
        var body = Data("--KilnBoundary\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\nfeedface\r\n".utf8)
        body += Data("--KilnBoundary\r\nContent-Disposition: form-data; name=\"source\"; filename=\"multi.zip\"\r\nContent-Type: application/zip\r\n\r\n".utf8)
        body += Data(archive) + Data("\r\n--KilnBoundary--\r\n".utf8)
        let m = try await c.http(.POST, "/build", body: Array(body), contentType: "multipart/form-data; boundary=KilnBoundary")
        #expect(m.status == 200, "\(m.body)")
        let g = try await c.http(.POST, "/build", json: ["nonce": "feedface", "repo_url": git.url("hello"), "repo_ref": "main"])
        #expect(g.status == 200, "\(g.body)")
        try await c.startWorker()
        try await c.startWorker()
        for r in [m, g] {
            let id = r.json["job_id"] as! String
            let s = try await c.waitForStatus(id, ["ready", "error"])
            #expect(s["status"] as? String == "ready", "\(s)")
            if r.body == g.body {
                // #14 item 3: a repository build records the commit and tree it built.
                #expect(s["source_digest"] as? String == commit, "\(s)")
                #expect((s["source_tree"] as? String)?.count == 40, "\(s)")
            } else {
                #expect((s["source_digest"] as? String)?.count == 64 && s["source_tree"] is NSNull, "an upload's digest is its SHA-256")
            }
        }
    }

    @Test func largeSourcesAreFetchedInChunksAndDeletedAfterwards() async throws {
        // Tiny limits so the fixture goes the way a large upload does: kept on disk, fetched by the
        // worker chunk by chunk over the bus, removed once the job has ended.
        let c = try await TestCluster(gatewayArgs: ["--inline-source-limit", "64", "--source-chunk-size", "100"])
        defer { c.stop() }
        let id = try await c.submit(Fixtures.helloCrate(name: "chunky"))
        let upload = c.dir.file("gw/uploads/\(id)")
        #expect(FileManager.default.fileExists(atPath: upload))
        try await c.startWorker()
        let s = try await c.waitForStatus(id, ["ready", "error"])
        #expect(s["status"] as? String == "ready", "\(s)")
        #expect(await eventually { !FileManager.default.fileExists(atPath: upload) }, "the upload of an ended job is deleted")
    }

    @Test func waitingJobsGoFIFOToWorkersAsTheyArrive() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        var ids: [String] = []
        for i in 0..<10 { ids.append(try await c.submit(slowCrate(seconds: 0, name: "job\(i)"))) }
        try await Task.sleep(for: .milliseconds(300))
        for id in ids { #expect((try await c.status(id))["status"] as? String == "waiting") }
        try await c.startWorker()
        try await c.startWorker()
        // Two workers: the two oldest jobs are taken, each by a different worker, the rest wait.
        let first = try await c.waitForStatus(ids[0], ["ready"])
        let second = try await c.waitForStatus(ids[1], ["ready"])
        #expect(first["worker_id"] as? String != second["worker_id"] as? String)
        for w in c.workers { #expect(try await w.waitForExit(timeout: .seconds(30)) == 0) }
        for id in ids[2...] { #expect((try await c.status(id))["status"] as? String == "waiting") }
        // A worker started later gets the next oldest.
        try await c.startWorker()
        _ = try await c.waitForStatus(ids[2], ["ready"])
        #expect((try await c.status(ids[3]))["status"] as? String == "waiting")
    }

    @Test func cancelWaitingAndBuilding() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let waiting = try await c.submit(Fixtures.helloCrate())
        let r = try await c.http(.POST, "/build/\(waiting)/cancel")
        #expect(r.status == 202)
        let s = try await c.waitForStatus(waiting, ["cancelled"])
        #expect(s["status"] as? String == "cancelled")
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(waiting)/events", timeout: 60)
        #expect(sse.ended && sse.events.last?.event == "cancelled")
        #expect((try await c.http(.POST, "/build/\(waiting)/cancel")).status == 409)

        let building = try await c.submit(slowCrate(seconds: 60))
        let worker = try await c.startWorker()
        _ = try await c.waitForStatus(building, ["building"])
        try await Task.sleep(for: .seconds(2))
        #expect((try await c.http(.POST, "/build/\(building)/cancel")).status == 202)
        let end = try await c.waitForStatus(building, ["cancelled", "error", "ready"], timeout: .seconds(20))
        #expect(end["status"] as? String == "cancelled")
        #expect(try await worker.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test func gatewayKilledMidBuildRecovers() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        // Long enough that the test sees it building even when the machine stalls for seconds.
        let id = try await c.submit(slowCrate(seconds: 15))
        try await c.startWorker()
        _ = try await c.waitForStatus(id, ["building"])
        try await Task.sleep(for: .seconds(1))
        c.gateway.process.signal(SIGKILL)
        _ = try await c.gateway.process.waitForExit()
        try await Task.sleep(for: .seconds(3))  // the worker keeps building and publishing meanwhile
        try await c.restartGateway()
        let s = try await c.waitForStatus(id, ["ready", "error"], timeout: .seconds(300))
        #expect(s["status"] as? String == "ready", "\(s)")
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.events.map(\.id) == Array(1...sse.events.count).map { Optional($0) }, "every seq exactly once")
        #expect(sse.events.last?.event == "done")
        let file = c.dir.file("r.tar.gz")
        _ = try await c.download("/build/\(id)/result", to: file)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "c0ffee00", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
    }

    @Test func eventsThatOvertakeTheAcceptanceAreKept() async throws {
        // A worker whose first event reaches the gateway before its acceptance (they travel on
        // different subjects): the event must wait for the assignment, not be dropped.
        let c = try await TestCluster()
        defer { c.stop() }
        let worker = try await BusClient.connect(.init(host: "127.0.0.1", port: c.broker.port), logger: Logger(label: "test"))
        let requests = try worker.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        try await worker.flush()
        let id = try await c.submit(Fixtures.helloCrate())
        let message = try #require(await requests.first(within: .seconds(60)), "no build request reached the stand-in worker")
        let request = try JSONDecoder().decode(BuildRequest.self, from: Data(message.payloadBytes))
        #expect(request.jobID == id)
        var accepted = BuildEvent(jobID: id, seq: 1, type: .accepted)
        accepted.workerID = "early-bird"
        try await worker.publish(Subjects.events(id, worker: "early-bird"), payload: accepted.encoded())
        try await worker.flush()
        try await Task.sleep(for: .milliseconds(200))  // the event is at the gateway well before the reply
        try await worker.publish(try #require(message.reply), payload: Array(try JSONEncoder().encode(DispatchReply.accept(workerID: "early-bird"))))
        var cancelled = BuildEvent(jobID: id, seq: 2, type: .cancelled)
        cancelled.workerID = "early-bird"
        try await worker.publish(Subjects.events(id, worker: "early-bird"), payload: cancelled.encoded())
        let s = try await c.waitForStatus(id, ["cancelled", "error"], timeout: .seconds(20))
        #expect(s["status"] as? String == "cancelled", "\(s)")
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.events.map(\.event) == ["accepted", "cancelled"])
        await worker.close()
    }

    @Test func silentWorkerEndsJobAsRetryableErrorWhenNoAttemptIsLeft() async throws {
        let c = try await TestCluster(gatewayArgs: ["--max-attempts", "1"])
        defer { c.stop() }
        let id = try await c.submit(slowCrate(seconds: 120))
        let worker = try await c.startWorker()
        _ = try await c.waitForStatus(id, ["building"])
        worker.signal(SIGKILL)
        let start = ContinuousClock.now
        let s = try await c.waitForStatus(id, ["error"], timeout: .seconds(30))
        #expect(ContinuousClock.now - start < .seconds(25), "within 3 heartbeats (15 s) plus the 1 s check, with slack for a loaded machine")
        #expect(s["failure_phase"] as? String == "worker")
        #expect((s["error_detail"] as? [String: Any])?["retryable"] as? Bool == true)
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.ended && sse.events.last?.event == "failed")
    }

    /// #14: the worker is lost mid-build; another worker runs the job again, and the job's stream holds
    /// both attempts as one sequence.
    @Test func aJobWhoseWorkerIsLostRunsAgainOnAnotherWorker() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let id = try await c.submit(slowCrate(seconds: 15))
        let first = try await c.startWorker()
        let building = try await c.waitForStatus(id, ["building"])
        #expect(building["attempt"] as? Int == 1 && building["max_attempts"] as? Int == 2, "\(building)")
        first.signal(SIGKILL)
        let again = try await c.waitForStatus(id, ["waiting"], timeout: .seconds(120))
        #expect(again["attempt"] as? Int == 2, "\(again)")
        try await c.startWorker()
        let s = try await c.waitForStatus(id, ["ready", "error"], timeout: .seconds(300))
        #expect(s["status"] as? String == "ready", "\(s)")
        #expect(s["worker_id"] as? String == c.workerIDs.last, "the second worker built it")
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.events.map(\.id) == Array(1...sse.events.count).map { Optional($0) }, "one sequence across attempts")
        #expect(sse.events.filter { $0.event == "accepted" }.count == 2)
        #expect(sse.events.contains { $0.event == "log" && $0.data.contains("attempt 1 of 2 ended") && $0.data.contains("went silent") })
        #expect(sse.events.last?.event == "done")
        // The result verifies like any other.
        let file = c.dir.file("retried.tar.gz")
        _ = try await c.download("/build/\(id)/result", to: file)
        let v = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", "c0ffee00", "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await v.waitForExit() == 0, "\(v.output)")
    }

    /// A compile error is the build's fault: the job ends `error` on its first attempt, and a second
    /// idle worker is not given it again.
    @Test func aCompileErrorIsNotRetried() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let id = try await c.submit(Fixtures.brokenCrate)
        try await c.startWorker()
        let s = try await c.waitForStatus(id, ["ready", "error"], timeout: .seconds(60))
        #expect(s["status"] as? String == "error" && s["failure_phase"] as? String == "build", "\(s)")
        #expect(s["attempt"] as? Int == 1 && s["max_attempts"] as? Int == 2, "\(s)")
        #expect((s["error_detail"] as? [String: Any])?["retryable"] as? Bool == false, "\(s)")
        // Another worker arrives and stays idle: the job is not offered again.
        try await c.startWorker()
        #expect(await eventually(within: .seconds(2)) { (try? await c.status(id))?["status"] as? String != "error" } == false)
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(id)/events", timeout: 60)
        #expect(sse.events.filter { $0.event == "accepted" }.count == 1)
        #expect(!sse.events.contains { $0.data.contains("trying again") })
    }
}

/// #13: a build with registry dependencies through the whole farm shows what its fetch did.
@Suite struct FetchThroughTheGatewayTests {
    @Test func theJobCarriesItsCacheSummary() async throws {
        let registry = try await CrateRegistryFixture.twoCrates()
        defer { registry.stop() }
        let c = try await TestCluster()
        defer { c.stop() }
        let summaries = try await [1, 2].asyncMap { _ in
            let id = try await c.submit(registry.appProject())
            try await c.startFetchService(registry: registry.indexURL)
            try await c.startWorker()
            let s = try await c.waitForStatus(id, ["ready", "error"])
            #expect(s["status"] as? String == "ready", "\(s)")
            return try #require(s["cache_summary"] as? [String: Any], "\(s)")
        }
        #expect(summaries[0]["crates"] as? Int == 2 && summaries[0]["misses"] as? Int == 2 && summaries[0]["hits"] as? Int == 0, "\(summaries[0])")
        #expect((summaries[0]["bytes_fetched"] as? Int ?? 0) > 0)
        #expect(summaries[1]["hits"] as? Int == 2 && summaries[1]["misses"] as? Int == 0, "the second build reads the cache: \(summaries[1])")
        #expect((summaries[1]["bytes_from_cache"] as? Int) == (summaries[0]["bytes_fetched"] as? Int))
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// #13 item 5 / #18 item 3: jobs go only to workers that can build them.
@Suite(.serialized) struct DispatchByCapabilityTests {
    @Test func aJobNoWorkerCanBuildFailsInDispatchNotOnAWorker() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let worker = try await c.startWorker()
        let id = try await c.submit(Fixtures.helloCrate(), extra: ["build_options": ["target": "riscv64gc-unknown-none-elf"]])
        let s = try await c.waitForStatus(id, ["error", "ready"], timeout: .seconds(30))
        #expect(s["failure_phase"] as? String == "dispatch", "\(s)")
        #expect((s["error"] as? String)?.contains("lack the Rust target riscv64gc-unknown-none-elf") == true, "\(s)")
        #expect((s["error_detail"] as? [String: Any])?["retryable"] as? Bool == false)
        #expect(s["worker_id"] is NSNull, "no worker took it")
        #expect(worker.isRunning, "the worker is still free for other builds")
        // A plain job still goes to that worker.
        let plain = try await c.submit(Fixtures.helloCrate())
        #expect((try await c.waitForStatus(plain, ["ready", "error"]))["status"] as? String == "ready")
    }

    /// The project kind is known only on the worker: a Nix job that reached a worker without Nix runs
    /// again, on a worker that announced Nix — here after waiting for one.
    @Test func aNixJobOnAWorkerWithoutNixRunsAgainOnOneWithIt() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        // A Nix-capable worker is seen (then kept busy), so the farm is known to build Nix.
        // Busy long enough to stay busy while the rest happens on a loaded machine (not waited for).
        let slow = try await c.submit(slowCrate(seconds: 120, name: "busy"))
        try await c.startWorker()
        _ = try await c.waitForStatus(slow, ["building"])
        try await c.startWorker(["--no-nix"])
        let nix = try await c.submit(Fixtures.nixDefault)
        let retried = try await eventually(within: .seconds(30)) { () async throws -> [String: Any]? in
            let s = try await c.status(nix)
            return s["attempt"] as? Int == 2 && s["status"] as? String == "waiting" ? s : nil
        }
        #expect(retried != nil, "the Nix job went back to the queue after the worker without Nix")
        try await c.startWorker()
        let s = try await c.waitForStatus(nix, ["ready", "error"], timeout: .seconds(60))
        #expect(s["status"] as? String == "ready" && s["worker_id"] as? String == c.workerIDs.last, "\(s)")
        let sse = try await SSEClient.read(port: c.gateway.port, path: "/build/\(nix)/events", timeout: 60)
        #expect(sse.events.contains { $0.event == "log" && $0.data.contains("does not build Nix projects") && $0.data.contains("trying again") })
    }

    @Test func aNixJobOnAFarmWithoutNixFailsInDispatch() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        try await c.startWorker(["--no-nix"])
        let nix = try await c.submit(Fixtures.nixDefault)
        let s = try await c.waitForStatus(nix, ["error", "ready"], timeout: .seconds(30))
        #expect(s["failure_phase"] as? String == "dispatch", "\(s)")
        #expect((s["error"] as? String)?.contains("lack the nix toolchain") == true, "\(s)")
        #expect(s["attempt"] as? Int == 2)
    }

    @Test func aJobThatNeedsNetworkGoesToTheWorkerThatGivesIt() async throws {
        let c = try await TestCluster(gatewayArgs: ["--allow-internet-builds"])
        defer { c.stop() }
        try await c.startWorker()
        try await c.startWorker(["--allow-internet-builds"])
        let networkedID = try #require(c.workerIDs.last)
        let id = try await c.submit(Fixtures.helloCrate(), extra: ["build_config": ["internet_access": true]])
        let s = try await c.waitForStatus(id, ["ready", "error"])
        #expect(s["status"] as? String == "ready", "\(s)")
        #expect(s["worker_id"] as? String == networkedID, "\(s)")
    }
}

/// #14 item 2: `POST /build/{id}/retry`.
@Suite struct RetryEndpointTests {
    @Test func aRetryIsANewJobWithTheSameInputsAFreshNonceAndItsLineage() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        // No worker yet: the job is certainly still waiting when its retry is asked for.
        let first = try await c.submit(Fixtures.helloCrate(), extra: ["skip_cache": true])
        let early = try await c.http(.POST, "/build/\(first)/retry")
        #expect(early.status == 409, "a job that has not ended is not retried: \(early.body)")
        try await c.startWorker()
        _ = try await c.waitForStatus(first, ["ready"])

        let retried = try await c.http(.POST, "/build/\(first)/retry")
        #expect(retried.status == 200, "\(retried.body)")
        let second = try #require(retried.json["job_id"] as? String)
        let nonce = try #require(retried.json["nonce"] as? String)
        #expect(second != first && nonce.count == 32 && nonce != "c0ffee00")
        let secondWorker = try await c.startWorker()
        let s: [String: Any]
        do { s = try await c.waitForStatus(second, ["ready", "error"]) } catch {
            throw LaunchError("\(error)\nthe second worker said: \(secondWorker.output.suffix(20).joined(separator: "\n"))")
        }
        #expect(s["status"] as? String == "ready", "\(s)")
        #expect(s["retry_of_build_id"] as? String == first && s["original_build_id"] as? String == first)
        #expect(s["skip_cache"] as? Bool == true, "the options carry over")
        // Verifies with the new nonce, not the old one.
        let file = c.dir.file("retry.tar.gz")
        _ = try await c.download("/build/\(second)/result", to: file)
        let ok = try await LaunchedProcess(BuiltProducts.path("kiln"), ["verify", file, "--nonce", nonce, "--key", c.keyFile, "--allow-tee-none"])
        #expect(try await ok.waitForExit() == 0, "\(ok.output)")

        // A retry of the retry keeps the chain's first job; a given nonce is used, a bad one refused.
        let third = try await c.http(.POST, "/build/\(second)/retry", json: ["nonce": "abcdef01"])
        #expect(third.status == 200 && third.json["nonce"] as? String == "abcdef01", "\(third.body)")
        let chained = try await c.status(try #require(third.json["job_id"] as? String))
        #expect(chained["retry_of_build_id"] as? String == second && chained["original_build_id"] as? String == first)
        let bad = try await c.http(.POST, "/build/\(second)/retry", json: ["nonce": "xyz"])
        #expect(bad.status == 400, "\(bad.body)")
        #expect((try await c.http(.POST, "/build/nope/retry")).status == 404)
    }
}

/// #14 item 3: a ready job lists its artifacts; after retention its result is gone with a reason.
@Suite struct ResultRetentionTests {
    @Test func aReadyJobListsItsArtifactsAndAfterRetentionSaysWhyItsResultIsGone() async throws {
        // About ten seconds of retention (a loaded machine must still see the result before it goes).
        let c = try await TestCluster(gatewayArgs: ["--retention-days", "0.000116"])
        defer { c.stop() }
        try await c.startWorker()
        let id = try await c.submit(Fixtures.helloCrate())
        let ready = try await c.waitForStatus(id, ["ready", "error"])
        #expect(ready["status"] as? String == "ready", "\(ready)")
        let artifacts = try #require(ready["artifact_ids"] as? [[String: Any]], "\(ready)")
        #expect(artifacts.count == 1 && artifacts[0]["name"] as? String == "artifacts/hello" && (artifacts[0]["sha256"] as? String)?.count == 64, "\(artifacts)")
        #expect((ready["artifact_availability"] as? [String: Any])?["available"] as? Bool == true)
        let gone = try await eventually(within: .seconds(40), every: .milliseconds(250)) { () async throws -> [String: Any]? in
            let s = try await c.status(id)
            return (s["artifact_availability"] as? [String: Any])?["available"] as? Bool == false ? s : nil
        }
        let reason = try #require((gone?["artifact_availability"] as? [String: Any])?["reason"] as? String)
        #expect(reason.contains("passed its retention period"), "\(reason)")
        let result = try await c.http(.GET, "/build/\(id)/result")
        #expect(result.status == 410 && result.body.contains("passed its retention period"), "\(result.status) \(result.body)")
        #expect(gone?["status"] as? String == "ready", "the job itself stays ready; only its result is gone")
    }
}
