import Foundation

/// One progress event (design §3, §5): `{job_id, seq, time, type, …}`.
///
/// A flat value with optional fields per type keeps the JSON exactly as documented and lets the
/// gateway store and relay events without knowing every type.
public struct BuildEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case accepted, phase, log, artifact, heartbeat, done, failed, cancelled
        public var isTerminal: Bool { self == .done || self == .failed || self == .cancelled }
    }

    public struct LogLine: Codable, Sendable, Equatable {
        public var stream: String
        public var line: String
    }

    public var jobID: String
    public var seq: Int
    /// RFC 3339 with milliseconds.
    public var time: String
    public var type: Kind
    public var workerID: String?
    // phase
    public var name: String?
    // log
    public var stream: String?
    public var lines: [String]?
    // artifact / done
    public var path: String?
    public var sha256: String?
    public var size: Int64?
    // failed
    public var failurePhase: String?
    public var message: String?
    public var retryable: Bool?
    public var suggestedAction: String?
    // done / failed, when dependencies were fetched
    public var cacheSummary: CacheSummary?
    // done / failed of a repository build: the commit and tree checked out
    public var sourceCommit: String?
    public var sourceTree: String?
    /// A rebuild's `done`: whether every artifact matched the original, and which did not.
    public var reproducible: Bool?
    public var differingArtifacts: [String]?
    // failed in detect: the toolchain this worker lacked (the next attempt goes to a worker that has it)
    public var requires: String?

    enum CodingKeys: String, CodingKey {
        case seq, time, type, name, stream, lines, path, sha256, size, message, retryable
        case cacheSummary = "cache_summary"
        case requires
        case sourceCommit = "source_commit"
        case sourceTree = "source_tree"
        case reproducible
        case differingArtifacts = "differing_artifacts"
        case jobID = "job_id"
        case workerID = "worker_id"
        case failurePhase = "failure_phase"
        case suggestedAction = "suggested_action"
    }

    public init(jobID: String, seq: Int, type: Kind, time: Date = Date()) {
        self.jobID = jobID
        self.seq = seq
        self.type = type
        self.time = BuildEvent.format(time)
    }

    /// RFC 3339 in UTC with microseconds (`2026-11-22T03:05:22.123456Z`): events of one build are
    /// often less than a millisecond apart. Hand-formatted: this runs for every event, and a
    /// formatter object per call costs more than the rest of the event.
    public static func format(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        var seconds = time_t(micros / 1_000_000)
        let fraction = Int(micros % 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let frac = String(fraction)
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + String(repeating: "0", count: 6 - frac.count) + frac + "Z"
    }

    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? e.encode(self)) ?? Data())
    }

    public static func decode(_ bytes: [UInt8]) throws -> BuildEvent {
        try JSONDecoder().decode(BuildEvent.self, from: Data(bytes))
    }
}

/// The phases a build goes through, in order (also `failure_phase` values, plus "worker").
public enum BuildPhase: String, Sendable, CaseIterable {
    case source, detect, fetch, build, package, attest, upload
}
