/// The bus subjects Kiln uses (design §3), in one place so gateway and worker cannot drift apart.
public enum Subjects {
    /// Gateway → workers (queue `workers`, each worker `sub max:1`), with a reply inbox.
    public static let buildRequest = "kiln.build.request"
    public static let workersQueue = "workers"
    // Everything a worker publishes ends in its own id: the bus's per-worker permissions
    // (`kiln.build.*.events.<id>`, …) then make the subject say who sent it — on kiln-broker beside
    // its `kiln-sender` stamp, on nats-server (which stamps nothing) as the only proof of the sender.

    /// Worker → gateway, pool: `{worker_id, toolchains, arch}` right after the one-shot `sub`.
    public static func workersReady(_ worker: String) -> String { "kiln.workers.ready.\(worker)" }
    public static let workersReadyAll = "kiln.workers.ready.*"

    /// Worker → gateway: one event JSON per message, `seq` 1, 2, 3 …
    public static func events(_ job: String, worker: String) -> String { "kiln.build.\(job).events.\(worker)" }
    public static let eventsAll = "kiln.build.*.events.*"
    /// Worker → gateway, as requests: result chunks; the gateway replies with an ack.
    public static func result(_ job: String, worker: String) -> String { "kiln.build.\(job).result.\(worker)" }
    public static let resultsAll = "kiln.build.*.result.*"
    /// Gateway → worker: `{action: cancel | replay | ack}`.
    public static func control(_ job: String) -> String { "kiln.build.\(job).control" }
    /// Worker → gateway, as requests: fetch chunks of an uploaded source too large to inline.
    public static func source(_ job: String, worker: String) -> String { "kiln.build.\(job).source.\(worker)" }
    public static let sourcesAll = "kiln.build.*.source.*"

    /// The worker id a worker-published subject ends in (`kiln.build.<job>.{events,result,source}.<id>`,
    /// `kiln.workers.ready.<id>`), or nil for any other subject. What it is worth depends on the bus:
    /// where per-worker permissions hold (kiln-broker with credentials, nats-server with Kiln's minted
    /// user JWTs) only that worker could publish there.
    public static func publishingWorker(of subject: String) -> Substring? {
        // On every event's path: read in place (substrings of the subject, nothing allocated).
        let id: Substring
        if subject.hasPrefix("kiln.workers.ready.") {
            id = subject.dropFirst("kiln.workers.ready.".utf8.count)
        } else if subject.hasPrefix("kiln.build.") {
            let afterJob = subject.dropFirst("kiln.build.".utf8.count).drop { $0 != "." }.dropFirst()
            let kind = afterJob.prefix { $0 != "." }
            guard kind == "events" || kind == "result" || kind == "source", kind.endIndex < afterJob.endIndex,
                subject.dropFirst("kiln.build.".utf8.count).first != "."
            else { return nil }
            id = afterJob[afterJob.index(after: kind.endIndex)...]
        } else {
            return nil
        }
        return isValidToken(id) ? id : nil
    }

    /// Gateway → one worker: a request addressed to a specific worker (re-dispatch). A worker that has
    /// already accepted a build answers 409 here.
    public static func workerRequest(_ workerID: String) -> String { "kiln.worker.\(workerID).request" }
    /// Worker → the pool that launched it, as a request: "certify this in-memory key"
    /// (`WorkerCertificateRequest` → `WorkerCertificateReply`). The broker lets a worker publish only
    /// on its own id's subject and stamps its identity, which the pool checks.
    public static func workerCertify(_ workerID: String) -> String { "kiln.worker.\(workerID).certify" }
    public static let workerCertifyAll = "kiln.worker.*.certify"

    /// Gateway → the other gateways: "job's event `seq` (ASCII payload) is stored". A hint only: a
    /// gateway relaying it to its own SSE clients reads the events from the shared store, so a forged
    /// notice can cause a read, never a false event.
    public static func gatewayStored(_ job: String) -> String { "kiln.gateway.stored.\(job)" }
    public static let gatewayStoredAll = "kiln.gateway.stored.*"

    /// Job ids and worker ids become subject tokens: keep them to [A-Za-z0-9_-].
    public static func isValidToken(_ s: some StringProtocol) -> Bool {
        !s.isEmpty && s.count <= 128
            && s.utf8.allSatisfy {
                ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95
            }
    }
}
