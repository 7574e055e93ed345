import Foundation
import KilnCore
import KilnMessages

/// A build job as the gateway keeps it (design §4 lifecycle fields).
public struct Job: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case waiting, building, ready, error, cancelled
        public var isTerminal: Bool { self == .ready || self == .error || self == .cancelled }
    }

    public var id: String
    public var status: Status
    public var phase: String?
    public var nonce: String
    /// The validated request as sent to workers (JSON).
    public var request: String
    /// Monotonic order of submission (FIFO dispatch).
    public var position: Int64
    public var queuedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var workerID: String?
    /// The broker-authenticated user whose acceptance placed this job (the `kiln-sender` of its
    /// reply), when the broker authenticates users: only that user's events, result chunks and source
    /// requests are accepted for the job.
    public var workerIdentity: String?
    /// The principal who submitted the job (`triggered_by`); nil for jobs from before principals.
    public var triggeredBy: String?
    public var failurePhase: String?
    public var error: String?
    public var retryable: Bool?
    public var suggestedAction: String?
    public var sourceDigest: String?
    public var resultSha256: String?
    public var resultSize: Int64?
    public var retentionExpiresAt: Date?
    public var lastSeenAt: Date?
    public var dispatchAttempts: Int
    /// The fetch phase's `CacheSummary`, as JSON (nil when nothing was fetched).
    public var cacheSummary: String?
    /// A repository build's checked-out tree (its commit is `sourceDigest`).
    public var sourceTree: String?
    /// When anything about the job last changed (every store update sets it).
    public var updatedAt: Date?
    /// `POST /build/{id}/cancel`: when, by whom, and why (the caller's optional reason).
    public var cancelRequestedAt: Date?
    public var cancelledBy: String?
    public var cancellationReason: String?
    /// The submission's `X-Request-Id` (or one the gateway made): quoted in error_detail for support.
    public var requestID: String?
    /// The final attempt's artifacts, `[{"name", "sha256"}]` as JSON, once the job is ready.
    public var artifactIDs: String?
    /// `POST /build/{id}/retry`: the job this one retries, and the first job of the chain.
    public var retryOf: String?
    public var originalBuild: String?
    /// `POST /build/{id}/rebuild`: the job whose result this one rebuilds and is compared with, and
    /// what the comparison found (`reproducible`, and the differing artifacts as a JSON array).
    public var rebuildOf: String?
    /// Which gateway is offering this waiting job to workers, and until when (several gateways on one
    /// store: each waiting job is offered by one of them at a time).
    public var dispatchClaimedBy: String?
    public var dispatchClaimExpiresAt: Date?
    /// The gateway that ingests this job's events and result (the one whose offer the worker accepted;
    /// another takes over when that one stops answering its heartbeat). With several gateways on one
    /// store, each job's events are stored, checked and acknowledged by exactly one of them.
    public var ingestedBy: String?
    public var reproducible: Bool?
    public var differingArtifacts: String?
    /// 1 for the first attempt; a job retried after a failure that was not the build's fault runs again.
    public var attempt = 1
    public var maxAttempts = 1
    /// What the submitter asked for beyond the source (`BuildRequestOptions` as JSON), echoed on the job.
    public var options: String?
    /// The worker's `done` event (as stored and relayed) while its result is still arriving: `ready`
    /// needs both, and the event is stored only once the result can be downloaded (`JobLifecycle`).
    public var heldDone: String?

    public init(id: String, nonce: String, request: String, position: Int64, queuedAt: Date, sourceDigest: String?) {
        self.id = id
        self.status = .waiting
        self.nonce = nonce
        self.request = request
        self.position = position
        self.queuedAt = queuedAt
        self.sourceDigest = sourceDigest
        self.dispatchAttempts = 0
    }
}

/// An event as stored and relayed: the worker's JSON, byte for byte.
public struct StoredEvent: Codable, Sendable, Equatable {
    public var jobID: String
    public var seq: Int
    public var type: String
    public var data: String

    enum CodingKeys: String, CodingKey {
        case seq, type, data
        case jobID = "job_id"
    }

    public init(jobID: String, seq: Int, type: String, data: String) {
        self.jobID = jobID
        self.seq = seq
        self.type = type
        self.data = data
    }

    /// The event's kind; nil for a type this gateway does not know (stored by a newer one).
    public var kind: BuildEvent.Kind? { BuildEvent.Kind(rawValue: type) }

    public var isTerminal: Bool { kind?.isTerminal ?? false }
}

extension Job {
    /// `GET /build/{id}` body.
    public var statusDocument: [String: AnyCodable] {
        func t(_ d: Date?) -> AnyCodable { d.map { .string(Timestamp.preciseString($0)) } ?? .null }
        var doc: [String: AnyCodable] = [
            "job_id": .string(id), "status": .string(status.rawValue), "phase": phase.map(AnyCodable.string) ?? .null,
            "queued_at": t(queuedAt), "created_at": t(queuedAt), "updated_at": t(updatedAt ?? queuedAt),
            "started_at": t(startedAt), "finished_at": t(finishedAt),
            "cancel_requested_at": t(cancelRequestedAt), "cancelled_by": cancelledBy.map(AnyCodable.string) ?? .null,
            "cancellation_reason": cancellationReason.map(AnyCodable.string) ?? .null,
            "duration_ms": (startedAt != nil && finishedAt != nil) ? .int(Int(finishedAt!.timeIntervalSince(startedAt!) * 1000)) : .null,
            "worker_id": workerID.map(AnyCodable.string) ?? .null,
            "triggered_by": triggeredBy.map(AnyCodable.string) ?? .null,
            "failure_phase": failurePhase.map(AnyCodable.string) ?? .null,
            "error": error.map(AnyCodable.string) ?? .null,
            "source_digest": sourceDigest.map(AnyCodable.string) ?? .null,
            "source_tree": sourceTree.map(AnyCodable.string) ?? .null,
            "retention_expires_at": t(retentionExpiresAt),
        ]
        doc["error_detail"] =
            error == nil
            ? .null
            : .object([
                "message": .string(error ?? ""), "retryable": .bool(retryable ?? false),
                "suggested_action": suggestedAction.map(AnyCodable.string) ?? .null,
                "attempt": .int(attempt), "max_attempts": .int(maxAttempts),
                "request_id": requestID.map(AnyCodable.string) ?? .null,
            ])
        let artifacts = status != .ready ? [] : artifactIDs.flatMap { try? JSONDecoder().decode([ArtifactID].self, from: Data($0.utf8)) } ?? []
        doc["artifact_ids"] = .array(artifacts.map { .object(["name": .string($0.name), "sha256": .string($0.sha256)]) })
        doc["artifact_availability"] = .object(["available": .bool(resultAvailability == nil), "reason": resultAvailability.map(AnyCodable.string) ?? .null])
        doc["retry_of_build_id"] = retryOf.map(AnyCodable.string) ?? .null
        doc["original_build_id"] = originalBuild.map(AnyCodable.string) ?? .null
        doc["rebuild_of_build_id"] = rebuildOf.map(AnyCodable.string) ?? .null
        if rebuildOf != nil {
            let differing = differingArtifacts.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? []
            doc["comparison"] =
                reproducible.map { r in
                    .object(["reproducible": .bool(r), "differing_artifacts": .array(differing.map(AnyCodable.string))])
                } ?? .null
        }
        doc["attempt"] = .int(attempt)
        doc["max_attempts"] = .int(maxAttempts)
        // Written by the gateway itself: unreadable means shown as none.
        doc["cache_summary"] =
            cacheSummary.flatMap { try? JSONDecoder().decode(CacheSummary.self, from: Data($0.utf8)) }.map { s in
                .object([
                    "crates": .int(s.crates), "hits": .int(s.hits), "misses": .int(s.misses), "evicted": .int(s.evicted),
                    "bytes_fetched": .int(Int(s.bytesFetched)), "bytes_from_cache": .int(Int(s.bytesFromCache)),
                ])
            } ?? .null
        let asked = requestOptions
        doc["skip_cache"] = .bool(asked.skipCache ?? false)
        doc["build_config"] =
            asked.buildConfig.map { c in
                .object([
                    "vcpus": c.vcpus.map(AnyCodable.int) ?? .null, "memory_mib": c.memoryMiB.map(AnyCodable.int) ?? .null,
                    "disk_mb": c.diskMB.map(AnyCodable.int) ?? .null, "timeout_s": c.timeoutSeconds.map(AnyCodable.int) ?? .null,
                    "internet_access": .bool(c.internetAccess ?? false),
                ])
            } ?? .null
        doc["build_options"] =
            asked.buildOptions.map { o in
                var object: [String: AnyCodable] = [:]
                if let f = o.features { object["features"] = .array(f.map(AnyCodable.string)) }
                if let n = o.noDefaultFeatures { object["no_default_features"] = .bool(n) }
                for (k, v) in [("package", o.package), ("bin", o.bin), ("target", o.target), ("profile", o.profile), ("attribute", o.attribute)] {
                    if let v { object[k] = .string(v) }
                }
                return .object(object)
            } ?? .null
        doc["result"] = resultSha256.map { .object(["sha256": .string($0), "size": .int(Int(resultSize ?? 0))]) } ?? .null
        return doc
    }
}

/// Just enough JSON for status documents.
public enum AnyCodable: Codable, Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case null
    case object([String: AnyCodable])
    case array([AnyCodable])

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .int(let i): try c.encode(i)
        case .bool(let b): try c.encode(b)
        case .null: try c.encodeNil()
        case .object(let o): try c.encode(o)
        case .array(let a): try c.encode(a)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .int(i)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([AnyCodable].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: AnyCodable].self))
        }
    }
}

/// The options of a submission that the job echoes (stored apart from the request, which may carry
/// megabytes of inline source).
public struct BuildRequestOptions: Codable, Sendable, Equatable {
    public var skipCache: Bool?
    public var buildConfig: BuildConfig?
    public var buildOptions: BuildOptions?
    /// Learnt from an attempt: the toolchain the project needs (its worker lacked it).
    public var toolchain: String?

    public init(skipCache: Bool? = nil, buildConfig: BuildConfig? = nil, buildOptions: BuildOptions? = nil) {
        self.skipCache = skipCache
        self.buildConfig = buildConfig
        self.buildOptions = buildOptions
    }

    enum CodingKeys: String, CodingKey {
        case skipCache = "skip_cache"
        case buildConfig = "build_config"
        case buildOptions = "build_options"
        case toolchain
    }
}

/// One artifact of a ready job, as the job lists it (`artifact_ids`).
public struct ArtifactID: Codable, Sendable, Equatable {
    public var name: String
    public var sha256: String

    public init(name: String, sha256: String) {
        self.name = name
        self.sha256 = sha256
    }
}

extension Job {
    /// What the submitter asked for beyond the source (and what attempts learnt), decoded from `options`.
    public var requestOptions: BuildRequestOptions {
        options.flatMap { try? JSONDecoder().decode(BuildRequestOptions.self, from: Data($0.utf8)) } ?? BuildRequestOptions()
    }

    /// Nil when the result can be downloaded; otherwise why not (also the text of the 409/410 answer).
    public var resultAvailability: String? {
        guard status == .ready else { return "the job is \(status.rawValue)" + (status.isTerminal ? "; it has no result" : "; its result is not ready") }
        guard resultSha256 != nil else {
            let when = retentionExpiresAt.map { " on " + Timestamp.string($0) } ?? ""
            return "the result passed its retention period\(when) and was deleted"
        }
        return nil
    }
}
