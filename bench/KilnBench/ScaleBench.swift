import ArgumentParser
import AsyncHTTPClient
import Foundation
import KilnBusClient
import KilnStandInWorker
import Logging
import NIOCore
import Synchronization

/// #15's benchmark: a burst of submissions through one or more gateways (round-robin over HTTP), taken
/// by stand-in workers on the bus, until every job is ready; then `--probes` jobs one at a time while
/// workers wait idle. Prints one JSON line: submissions per second and jobs per second to ready in the
/// burst, and dispatch latency (submission sent → a worker accepted it) p50/p99 of the probes.
struct ScaleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "scale")

    @Option(help: "Gateway URLs, comma-separated (submissions go round-robin).") var gateways: String
    @Option(help: "Bus URL(s) for the stand-in workers; comma-separated lists spread workers over members.") var bus: String
    @Option(help: "A label for the JSON line.") var name: String
    @Option var archive: String
    @Option var jobs = 400
    @Option var workers = 16
    @Option(help: "Submissions in flight at once.") var concurrency = 32
    @Option(help: "Jobs submitted one at a time afterwards, to measure dispatch with idle workers.") var probes = 100

    func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let urls = gateways.split(separator: ",").map(String.init)
        let members = bus.split(separator: ",").map(String.init)
        let body = try JSONSerialization.data(withJSONObject: [
            "nonce": "b0b0b0b0", "source_data": try Data(contentsOf: URL(fileURLWithPath: archive)).base64EncodedString(),
        ])
        let tally = Tally()
        let jobs = self.jobs
        var clients: [BusClient] = []
        for i in 0..<workers {
            var configuration = try BusClient.Configuration(url: members[i % members.count])
            configuration.pendingLimit = 8 << 20
            configuration.inboxNamespace = "bench\(i)"  // the gateway answers a worker on its own inbox only
            clients.append(try await BusClient.connect(configuration, logger: logger))
        }
        let standIns = Task { [clients, logger] in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, client) in clients.enumerated() {
                    group.addTask {
                        var c = StandInWorker.Configuration(workerID: "bench\(i)")
                        c.logEvents = 2
                        c.resultBytes = 1024
                        try await StandInWorker(client: client, configuration: c, logger: logger).run { tally.accepted($0) }
                    }
                }
                try await group.waitForAll()
            }
        }
        defer { standIns.cancel() }
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(connectionPool: .init(idleTimeout: .seconds(60))))
        let start = ContinuousClock.now
        let cpuBefore = CPUTimes.now()
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var mine: [String] = []
                    while true {
                        let n = tally.nextSubmission()
                        guard n < jobs else { return mine }
                        var request = HTTPClientRequest(url: urls[n % urls.count] + "/build")
                        request.method = .POST
                        request.headers.add(name: "Content-Type", value: "application/json")
                        request.body = .bytes(ByteBuffer(bytes: body))
                        let response = try await http.execute(request, timeout: .seconds(60))
                        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
                        guard response.status == .ok, let id = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["job_id"] as? String
                        else { throw ValidationError("submission refused: \(response.status) \(text)") }
                        mine.append(id)
                    }
                }
            }
            var all: [String] = []
            for try await some in group { all += some }
            return all
        }
        let submitted = ContinuousClock.now - start
        let cpuBusy = CPUTimes.now().busyPercent(since: cpuBefore)
        // Every job ready: poll the first gateway's metrics (jobs by status) until all are.
        var ready = 0
        while ready < jobs {
            try await Task.sleep(for: .milliseconds(50))
            let response = try await http.execute(HTTPClientRequest(url: urls[0] + "/metrics"), timeout: .seconds(10))
            let text = String(buffer: try await response.body.collect(upTo: 4 << 20))
            ready =
                text.split(separator: "\n").first { $0.hasPrefix("kiln_gateway_jobs{status=\"ready\"}") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }.map(Int.init) ?? 0
            if ContinuousClock.now - start > .seconds(600) { throw ValidationError("only \(ready) of \(jobs) ready after 600 s") }
        }
        let total = ContinuousClock.now - start
        // Dispatch latency with idle workers: one job at a time, the next once a worker has it.
        var probeLatencies: [Duration] = []
        for i in 0..<probes {
            try await Task.sleep(for: .milliseconds(20))  // the last worker is back in the queue group
            var request = HTTPClientRequest(url: urls[i % urls.count] + "/build")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
            let sent = ContinuousClock.now
            let response = try await http.execute(request, timeout: .seconds(60))
            let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
            guard let id = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])?["job_id"] as? String else {
                throw ValidationError("probe refused: \(text)")
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while true {
                if let at = tally.acceptedAt(id) {
                    probeLatencies.append(at - sent)
                    break
                }
                guard ContinuousClock.now < deadline else { throw ValidationError("probe \(id) not accepted within 30 s") }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        try await http.shutdown()
        let sorted = probeLatencies.sorted()
        func ms(_ d: Duration) -> Double { ((Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15) * 10).rounded() / 10 }
        func pct(_ p: Double) -> Double { sorted.isEmpty ? 0 : ms(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) }
        let line: [String: Any] = [
            "bench": "scale", "name": name, "jobs": ids.count, "gateways": urls.count, "workers": workers,
            "submissions_per_s": (Double(jobs) / submitted.seconds).rounded(),
            "jobs_ready_per_s": (Double(jobs) / total.seconds).rounded(),
            "dispatch_p50_ms": pct(0.5), "dispatch_p99_ms": pct(0.99), "accepted": tally.acceptedCount, "cpu_busy_pct_during_submissions": cpuBusy,
            "probes": sorted.count,
        ]
        print(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self))
    }
}

/// What the submitters and stand-in workers record, from many tasks.
private final class Tally: Sendable {
    private let state = Mutex<(next: Int, accepted: [String: ContinuousClock.Instant])>((0, [:]))

    func nextSubmission() -> Int {
        state.withLock { s in
            defer { s.next += 1 }
            return s.next
        }
    }

    func accepted(_ id: String) {
        let now = ContinuousClock.now
        state.withLock { $0.accepted[id] = now }
    }

    func acceptedAt(_ id: String) -> ContinuousClock.Instant? { state.withLock { $0.accepted[id] } }

    var acceptedCount: Int { state.withLock { $0.accepted.count } }
}

/// The machine's CPU time from /proc/stat: how busy all cores were between two readings (the burst of
/// submissions is CPU-bound when this is near 100 on a machine that runs the whole farm).
private struct CPUTimes {
    var busy: Double
    var total: Double

    static func now() -> CPUTimes {
        let line = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first ?? ""
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 5 else { return CPUTimes(busy: 0, total: 0) }
        let idle = fields[3] + fields[4]
        let total = fields.prefix(8).reduce(0, +)
        return CPUTimes(busy: total - idle, total: total)
    }

    func busyPercent(since earlier: CPUTimes) -> Double {
        let total = self.total - earlier.total
        return total > 0 ? ((busy - earlier.busy) / total * 1000).rounded() / 10 : 0
    }
}
