import Foundation
import KilnArchive
import KilnAttestation
import KilnBus
import KilnBusClient
import KilnMessages
import KilnProcess
import Logging
import ServiceLifecycle
import Synchronization

/// One worker = one build (design §3, §5). Subscribes once, accepts exactly one build request, builds
/// it in the sandbox, publishes events and the attested result, waits for the gateway's
/// acknowledgement, deletes its scratch directory and returns (the process then exits).
public final class WorkerService: Service, Sendable {
    public enum Exit: Int32, Sendable {
        case done = 0
        case undelivered = 3
        case idle = 4
    }

    public let configuration: WorkerConfiguration
    let logger: Logger
    /// How the run ended (exit status for the process).
    public var exit: Exit { outcome.withLock { $0 } }
    private let outcome = Mutex<Exit>(.done)

    public init(configuration: WorkerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let fm = FileManager.default
        // The scratch directory is the worker's alone (0700): the sandbox sees only the workspace
        // binds staged for it, and the build uid cannot even traverse here.
        try fm.createDirectory(atPath: configuration.scratchDirectory, withIntermediateDirectories: true)
        chmod(configuration.scratchDirectory, 0o700)
        defer {
            if !configuration.keepScratch { try? fm.removeItem(atPath: configuration.scratchDirectory) }
        }
        // The key exists before any source is fetched. In a TEE it is generated in memory for this one
        // build and bound into the hardware report, so the VM holds no long-lived key at all;
        // elsewhere it is the farm key file, root-only (0600), so neither the build uid nor a
        // host-side read acting as it can open it.
        let evidenceProvider = EvidenceProviders.detect(tsmRoot: configuration.tsmRoot)
        // A certified key (a VM worker) is made once connected, when the pool can certify it.
        let ownKey: SigningKey?
        if configuration.certifiedKey {
            ownKey = nil
        } else if evidenceProvider.tee != "none", configuration.ephemeralKeyInTEE {
            let key = SigningKey()
            logger.info("in a TEE: signing with a per-build key made in memory (\(key.publicKey.keyID)), bound into the hardware report; the key file is not used")
            ownKey = key
        } else {
            ownKey = try SigningKey.loadOrCreate(at: configuration.keyFile)
            restrictKeyPermissions()
        }
        if let user = configuration.buildUser {
            logger.info("builds run as unprivileged uid \(user.uid)")
        } else {
            logger.warning("the worker is not root: builds run as the worker's own uid, without cgroups or a disk limit")
        }
        var sysroot = configuration.toolchains.rustSysroot
        if sysroot == nil { sysroot = await CargoBuilder.findSysroot() }
        var toolchains: [String] = []
        if sysroot != nil { toolchains.append("cargo") }
        if configuration.toolchains.nixEnabled {
            if let (problem, action) = NixDaemon.unavailability(socket: configuration.toolchains.nixDaemonSocket) {
                logger.warning("Nix projects will fail here until this is fixed: \(problem); \(action)")
            } else {
                toolchains.append("nix")
            }
        }
        guard !toolchains.isEmpty || configuration.toolchains.nixEnabled else {
            throw BuildFailure.farm(
                "detect", "this worker has no Rust toolchain and Nix is disabled, so it can build nothing",
                operatorAction: "install Rust or enable Nix on the workers")
        }

        let client = try await BusClient.connect(configuration.bus, logger: logger)
        // Certified before it announces itself, so a worker that cannot sign never takes a job.
        let certified = ownKey == nil ? try await CertifiedKey.obtain(client: client, workerID: configuration.workerID, logger: logger) : nil
        guard let signingKey = certified?.key ?? ownKey else { return }  // one of the two is always there
        let gate = AcceptanceGate(workerID: configuration.workerID, client: client, gateway: configuration.gateway)
        let cancel = CancelSwitch()

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await gate.run() }
            defer { gate.stop() }
            let accepted: BuildRequest? = try await withGracefulShutdownHandler {
                try await waitForRequest(client: client, gate: gate, toolchains: toolchains, sysroot: sysroot)
            } onGracefulShutdown: {
                gate.shutdown()
            }
            guard let request = accepted else {
                logger.info("no build accepted; exiting")
                outcome.withLock { $0 = .idle }
                return
            }

            var log = logger
            log[metadataKey: "job_id"] = "\(request.jobID)"
            let events = EventLog(jobID: request.jobID, workerID: configuration.workerID, client: client, logger: log, firstSeq: request.firstSeq ?? 1)
            // No flush needed before accepting: the broker handles one connection's frames in order, so
            // this subscription is live before the gateway sees the acceptance and can send a control.
            let control = try client.subscribe(Subjects.control(request.jobID))
            try await gate.acknowledgeAccepted()
            await events.emit(.accepted)

            let configuration = self.configuration
            let jobLog = log
            let pipeline = BuildPipeline(
                configuration: configuration, request: request, key: signingKey, certificate: certified, evidenceProvider: evidenceProvider, sysroot: sysroot,
                client: client, events: events, cancel: cancel, logger: log)
            // Control messages are handled by a child task that lives exactly as long as the build.
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await message in control {
                        guard configuration.gateway.mayHaveSent(message) else {
                            jobLog.warning(
                                "control message from another sender than the gateway ignored",
                                metadata: [
                                    "sender": "\(message.headers?[BusHeader.senderHeader] ?? "")"
                                ])
                            continue
                        }
                        // Not JSON a gateway sends: nothing to act on.
                        guard let msg = try? JSONDecoder().decode(ControlMessage.self, from: Data(message.payloadBytes)) else { continue }
                        if let target = msg.workerID, target != configuration.workerID { continue }
                        switch msg.action {
                        case .cancel:
                            jobLog.info("cancel requested")
                            cancel.fire()
                        case .replay: await events.replay(from: msg.fromSeq ?? 1)
                        case .ack: await events.acknowledge(through: msg.seq ?? 0)
                        }
                    }
                }
                await withGracefulShutdownHandler {
                    await pipeline.run()
                } onGracefulShutdown: {
                    pipeline.shutdownRequested.set()
                    cancel.fire()
                }
                // Keep everything until the gateway has the terminal event (acks arrive as control
                // messages, so the control task is still running), then leave.
                let terminalSeq = await events.events.count
                if await events.waitForAck(of: terminalSeq, timeout: configuration.limits.deliveryTimeout) {
                    log.info("terminal event acknowledged; exiting")
                    outcome.withLock { $0 = .done }
                } else {
                    log.error("the gateway never acknowledged the terminal event; exiting anyway")
                    outcome.withLock { $0 = .undelivered }
                }
                group.cancelAll()
            }
        }
        await client.drain()
    }

    /// Subscribes once (plus the direct subject), announces readiness, and returns the first valid request.
    private func waitForRequest(client: BusClient, gate: AcceptanceGate, toolchains: [String], sysroot: String?) async throws -> BuildRequest? {
        var ready = WorkerReady(
            workerID: configuration.workerID, toolchains: toolchains, arch: Self.arch, targets: Self.rustTargets(sysroot: sysroot),
            internetAccess: configuration.allowInternetBuilds, limits: Self.offeredLimits(configuration))
        ready.isolation = configuration.isolation
        gate.announce(ready)
        let direct = try client.subscribe(Subjects.workerRequest(configuration.workerID))
        gate.startAnswering(direct)
        let oneShot = try client.subscribe(Subjects.buildRequest, queue: Subjects.workersQueue, max: 1)
        gate.startAnswering(oneShot)
        // The subscription must be live before anyone is told this worker is ready.
        try await client.flush()
        try await client.publish(Subjects.workersReady(configuration.workerID), payload: Array(try JSONEncoder().encode(ready)))
        logger.info("ready", metadata: ["worker_id": "\(configuration.workerID)", "toolchains": "\(toolchains.joined(separator: ","))"])
        let request = await gate.waitForRequest(idleTimeout: configuration.idleTimeout)
        if request != nil {
            // Spent or on a closed connection: either way it delivers nothing more.
            try? await oneShot.unsubscribe()
        }
        return request
    }

    /// The key file must be readable by its owner only: group/other bits are removed (and said).
    private func restrictKeyPermissions() {
        var st = stat()
        guard lstat(configuration.keyFile, &st) == 0, (st.st_mode & 0o077) != 0 else { return }
        logger.warning("key file \(configuration.keyFile) was readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); now 0600")
        chmod(configuration.keyFile, 0o600)
    }

    /// Target triples whose standard library the toolchain has (`lib/rustlib/<triple>/lib`).
    static func rustTargets(sysroot: String?) -> [String]? {
        guard let sysroot, let names = try? FileManager.default.contentsOfDirectory(atPath: sysroot + "/lib/rustlib") else { return nil }
        return names.filter {
            Subjects.isValidToken($0.replacingOccurrences(of: ".", with: "_")) && FileManager.default.fileExists(atPath: sysroot + "/lib/rustlib/" + $0 + "/lib")
        }.sorted()
    }

    /// The most one build may have here (what a build_config may ask for).
    static func offeredLimits(_ configuration: WorkerConfiguration) -> BuildConfig {
        let l = configuration.limits
        return BuildConfig(
            vcpus: l.cpuQuota > 0 ? Int(l.cpuQuota) : ProcessInfo.processInfo.activeProcessorCount, memoryMiB: Int(l.memoryBytes >> 20),
            diskMB: Int(l.diskBytes >> 20), timeoutSeconds: Int(l.buildTimeout.components.seconds))
    }

    static var arch: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}
