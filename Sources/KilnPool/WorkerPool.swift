import Crypto
import Foundation
import KilnBus
import KilnBusClient
import KilnHost
import KilnMessages
import KilnProcess
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Keeps `idleTarget` fresh workers waiting: watches `kiln.workers.ready` (a worker subscribed) and
/// `accepted` events (a worker took a job), starts a replacement for every worker that takes a job,
/// restarts idle workers that die, and never runs more than `maxWorkers` at once. Workers are started
/// through a launch command template, so an operator can start a confidential VM instead of a process.
public final class WorkerPool: Service, Sendable {
    public struct Configuration: Sendable {
        public var idleTarget = 2
        public var maxWorkers = 8
        /// `/bin/sh -c` template; `{id}`, `{broker}`, `{scratch}` are substituted.
        public var launchTemplate: String
        /// The broker URL given to workers (`{broker}`); with per-worker credentials, stripped of the
        /// pool's own login.
        public var broker: String
        public var stateDirectory: String
        /// When set, each worker gets its own credential (env `KILN_BROKER_TOKEN`), signed with this
        /// key and valid for `credentialLifetime`: a leaked one is one worker's, for one job's time.
        public var credentialKey: Curve25519.Signing.PrivateKey?
        public var credentialLifetime: Duration = .seconds(2 * 3600)
        /// A worker that has not announced itself this long after its launch (a VM that never boots, a
        /// process stuck before connecting) is killed, and replaced like any worker that exits.
        public var bootTimeout: Duration = .seconds(300)
        /// When set, the pool certifies the in-memory key of each worker it launched (`kiln-worker
        /// --certified-key`, a VM worker) with the farm key; needs `credentialKey`, whose per-worker
        /// bus identity is what ties a request to the worker the pool launched.
        public var certifier: WorkerCertifier.Configuration?

        public init(launchTemplate: String, broker: String, stateDirectory: String) {
            self.launchTemplate = launchTemplate
            self.broker = broker
            self.stateDirectory = stateDirectory
        }

        /// `kiln://user:password@host:port` → `kiln://host:port`.
        public static func withoutCredentials(_ url: String) -> String {
            // A NATS URL may list a cluster's members, each with its own login.
            url.split(separator: ",", omittingEmptySubsequences: false).map { member in
                guard let scheme = member.range(of: "://"), let at = member.range(of: "@", range: scheme.upperBound..<member.endIndex) else {
                    return String(member)
                }
                return String(member[..<scheme.upperBound]) + String(member[at.upperBound...])
            }.joined(separator: ",")
        }
    }

    enum WorkerState: String { case starting, idle, busy }

    struct Managed {
        var process: ChildProcess
        var state: WorkerState
        var startedAt: Date
        var scratch: String
        /// Past the boot timeout and told to stop.
        var bootTimedOut = false
        /// Its key has been certified: a second request (another key) is refused.
        var certified = false
    }

    /// How a worker process ended.
    struct Exit: Sendable {
        var id: String
        var pid: pid_t
        var termination: ChildProcess.Termination
    }

    public let configuration: Configuration
    let bus: BusClient.Configuration
    let logger: Logger
    public let metrics: PoolMetrics
    let state = NIOLockedValueBox<(workers: [String: Managed], started: Int)>(([:], 0))
    private let exits: AsyncStream<Exit>
    private let exitContinuation: AsyncStream<Exit>.Continuation

    public init(configuration: Configuration, bus: BusClient.Configuration, logger: Logger, metrics: PoolMetrics = PoolMetrics()) {
        self.configuration = configuration
        self.bus = bus
        self.logger = logger
        self.metrics = metrics
        (exits, exitContinuation) = AsyncStream.makeStream()
    }

    public var counts: (idle: Int, starting: Int, busy: Int, started: Int) {
        state.withLockedValue { s in
            (
                s.workers.values.filter { $0.state == .idle }.count, s.workers.values.filter { $0.state == .starting }.count,
                s.workers.values.filter { $0.state == .busy }.count, s.started
            )
        }
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.stateDirectory + "/workers", withIntermediateDirectories: true)
        let client = try await BusClient.connect(bus, logger: logger)
        let ready = try client.subscribe(Subjects.workersReadyAll)
        let events = try client.subscribe(Subjects.eventsAll)
        let certifications = try configuration.certifier.map { _ in try client.subscribe(Subjects.workerCertifyAll) }
        try await client.flush()
        replenish()
        // Cannot fail; a graceful shutdown cancels it.
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await m in ready {
                        // Unreadable, or about another worker than the one publishing: not a worker's word.
                        guard let r = try? JSONDecoder().decode(WorkerReady.self, from: Data(m.payloadBytes)),
                            Subjects.publishingWorker(of: m.subject).map({ $0 == r.workerID }) ?? false
                        else { continue }
                        self.mark(r.workerID, .idle, isolation: r.isolation)
                    }
                }
                group.addTask {
                    for await m in events {
                        // Only `accepted` matters, and it is small: skip big log events cheaply.
                        guard m.payload.readableBytes < 4096, let e = try? BuildEvent.decode(m.payloadBytes), e.type == .accepted,
                            let w = e.workerID, Subjects.publishingWorker(of: m.subject).map({ $0 == w }) ?? false
                        else { continue }
                        self.mark(w, .busy)
                        self.replenish()
                    }
                }
                group.addTask {
                    while (try? await Task.sleep(for: .seconds(1))) != nil { self.killWorkersThatNeverBooted() }
                }
                if let certifications {
                    group.addTask {
                        for await m in certifications {
                            let decision = self.certify(m)
                            // Answered only on the requesting worker's inbox; a refusal for asking
                            // elsewhere is counted and logged by `certify`, never published.
                            guard let reply = WorkerCertifier.answerSubject(for: m.subject, reply: m.reply) else { continue }
                            // A reply of two optional strings always encodes; nothing to lose here.
                            guard let answer = try? JSONEncoder().encode(decision) else { continue }
                            do { try await client.publish(reply, payload: Array(answer)) } catch {
                                self.logger.warning("cannot answer a certification request: \(error)")
                            }
                        }
                    }
                }
                group.addTask {
                    for await exit in self.exits {
                        let removed = self.state.withLockedValue { $0.workers.removeValue(forKey: exit.id) }
                        // Whatever the reason, nothing of the worker may stay behind: its sandbox
                        // cgroups (and processes in them), its workspace mount, its scratch directory.
                        let cleaned = removed.map { WorkerLeftovers.clean(workerPID: exit.pid, scratch: $0.scratch) } ?? []
                        var metadata: Logger.Metadata = ["worker_id": "\(exit.id)", "exit": "\(exit.termination)"]
                        if !cleaned.isEmpty { metadata["cleaned"] = "\(cleaned.joined(separator: "; "))" }
                        switch (removed?.state, exit.termination != .exited(0)) {
                        case (.busy, false):
                            self.logger.info("worker finished its build and exited", metadata: metadata)
                        case (.busy, true):
                            self.logger.error("worker died during its build (\(exit.termination)); cleaned up after it", metadata: metadata)
                        default:
                            self.logger.warning("idle worker exited (\(exit.termination)); replacing it", metadata: metadata)
                        }
                        if !cleaned.isEmpty { self.metrics.cleanedUp.increment() }
                        self.replenish()
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
        exitContinuation.finish()
        await stopAll()
        await client.close()
    }

    /// Workers still `starting` past `bootTimeout` get SIGTERM (a VM launch passes it on to qemu), and
    /// SIGKILL to their process group 10 s later; their exit replaces them.
    func killWorkersThatNeverBooted(now: Date = Date()) {
        let limit = Double(configuration.bootTimeout.components.seconds)
        let stuck = state.withLockedValue { s in
            var stuck: [(id: String, process: ChildProcess, first: Bool, overdue: Double)] = []
            for (id, w) in s.workers where w.state == .starting && now.timeIntervalSince(w.startedAt) > limit {
                stuck.append((id, w.process, !w.bootTimedOut, now.timeIntervalSince(w.startedAt) - limit))
                s.workers[id]?.bootTimedOut = true
            }
            return stuck
        }
        for worker in stuck {
            if worker.first {
                logger.warning("worker did not announce itself within \(Int(limit)) s of its launch; stopping it", metadata: ["worker_id": "\(worker.id)"])
                metrics.bootTimeouts.increment()
            }
            if worker.overdue > 10 {
                worker.process.signal(SIGKILL, toProcessGroup: true)
            } else {
                worker.process.signal(SIGTERM)
            }
        }
    }

    private func mark(_ id: String, _ new: WorkerState, isolation: String? = nil) {
        let (changed, booted) = state.withLockedValue { s -> (Bool, Date?) in
            guard var w = s.workers[id], w.state != .busy else { return (false, nil) }
            let booted = w.state == .starting && new == .idle ? w.startedAt : nil
            w.state = new
            s.workers[id] = w
            return (true, booted)
        }
        // Launch to ready: for a VM worker, its boot (`cluster/vm/launch-vm.sh`).
        if let booted { metrics.recordBoot(nanoseconds: Int64(Date().timeIntervalSince(booted) * 1e9), isolation: isolation) }
        if changed { report() }
    }

    /// Starts workers until `idleTarget` are idle or starting (within `maxWorkers`). The count and the
    /// start happen under one lock, so two callers at once (a job accepted, a worker exited) cannot
    /// both see room for the last slot and overshoot `maxWorkers`.
    func replenish() {
        while true {
            let outcome: Result<(id: String, pid: pid_t)?, any Error> = state.withLockedValue { s in
                let waiting = s.workers.values.filter { $0.state != .busy }.count
                guard waiting < configuration.idleTarget, s.workers.count < configuration.maxWorkers else { return .success(nil) }
                return Result {
                    let (id, managed) = try launch()
                    s.workers[id] = managed
                    s.started += 1
                    return (id, managed.process.pid)
                }
            }
            switch outcome {
            case .success(nil):
                report()
                return
            case .success(let started?):
                metrics.started.increment()
                logger.info("started worker", metadata: ["worker_id": "\(started.id)", "pid": "\(started.pid)"])
            case .failure(let error):
                logger.error("cannot start a worker: \(error)")
                report()
                return
            }
        }
    }

    /// A worker's own bus login, for one job's time: on kiln-broker a `WorkerCredential`; on nats-server
    /// a NATS user (fresh key, JWT issued by the account whose key is the operator's credential key)
    /// with the worker's permissions (`BusRoles.worker`), which the server enforces.
    static func mintCredential(worker id: String, key: Curve25519.Signing.PrivateKey, bus: String, lifetime: Duration, now: Int64) throws -> String {
        let expires = now + lifetime.components.seconds
        guard bus.lowercased().hasPrefix("nats") else {
            return try WorkerCredential(workerID: id, issuedAt: now, expiresAt: expires).mint(key: key)
        }
        return try NATSAccountSetup.user(
            BusRoles.worker(id), name: WorkerCredential.identity(of: id), accountKey: NATSKey(role: .account, privateKey: key), expires: expires, now: now
        ).credsText
    }

    private func launch() throws -> (String, Managed) {
        let id = "w" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        let scratch = configuration.stateDirectory + "/scratch/" + id
        let command = configuration.launchTemplate
            .replacingOccurrences(of: "{id}", with: id)
            .replacingOccurrences(
                of: "{broker}", with: configuration.credentialKey == nil ? configuration.broker : Configuration.withoutCredentials(configuration.broker)
            )
            .replacingOccurrences(of: "{scratch}", with: scratch)
        var environment = ProcessInfo.processInfo.environment
        if let key = configuration.credentialKey {
            // The pool's own broker login never reaches a worker: it gets a credential of its own
            // (and no copy of the pool's client certificate key).
            environment["KILN_BROKER_URL"] = nil
            environment["KILN_BROKER_CERT"] = nil
            environment["KILN_BROKER_KEY"] = nil
            environment["KILN_BROKER_CREDS"] = nil
            environment["KILN_BROKER_TOKEN"] = try Self.mintCredential(
                worker: id, key: key, bus: configuration.broker, lifetime: configuration.credentialLifetime, now: Int64(Date().timeIntervalSince1970))
        }
        let logPath = configuration.stateDirectory + "/workers/\(id).log"
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard log >= 0 else { throw ChildProcess.SpawnError(executable: logPath, errno: errno) }
        defer { close(log) }
        let exits = exitContinuation
        let process = try ChildProcess(
            executable: "/bin/sh", arguments: ["-c", "exec " + command], environment: environment,
            stdout: log, stderr: log
        ) { pid, termination in
            exits.yield(Exit(id: id, pid: pid, termination: termination))
        }
        return (id, Managed(process: process, state: .starting, startedAt: Date(), scratch: scratch))
    }

    private func report() {
        let c = counts
        metrics.idle.set(Double(c.idle + c.starting))
        metrics.ready.set(Double(c.idle))
        metrics.starting.set(Double(c.starting))
        metrics.busy.set(Double(c.busy))
        logger.info("pool", metadata: ["idle": "\(c.idle)", "starting": "\(c.starting)", "busy": "\(c.busy)", "started_total": "\(c.started)"])
    }

    /// SIGKILL to every worker at once (tests).
    func killAllForTesting() {
        for p in state.withLockedValue({ Array($0.workers.values.map(\.process)) }) { p.signal(SIGKILL) }
    }

    /// SIGTERM to every worker (idle ones exit at once; busy ones report the interruption), then
    /// SIGKILL to whatever is left after 10 s.
    private func stopAll() async {
        let processes = state.withLockedValue { Array($0.workers.values.map(\.process)) }
        for p in processes { p.signal(SIGTERM) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for p in processes { await p.wait() } }
            group.addTask {
                guard (try? await Task.sleep(for: .seconds(10))) != nil else { return }
                for p in processes { p.signal(SIGKILL) }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
