/// What a worker asks the farm's fetch service for (`kiln-fetch`, docs/fetch-service.md). Workers
/// never touch a network: every input a build needs comes over the bus from the fetch service, and
/// the worker checks each against a digest it already trusts (the lock file's SHA-256, the commit id)
/// before anything uses it.
///
/// Each request goes to `kiln.worker.<id>.fetch.<kind>`: the worker's own id is in the subject, so on
/// kiln-broker (which lets a worker publish only under its own id and stamps its identity) the fetch
/// service knows whose quota a request draws on. Replies carry `status` (HTTP-like: 200, 400, 403, 404,
/// 413, 429, 502; never 503, which the bus uses for "no responders"), `message` and `retryable` headers; a 200 carries the bytes (at most one chunk) and `size`, the
/// whole object's length, so the worker asks for the next `offset` until it has all of it.
public enum FetchKind: String, Sendable, CaseIterable {
    /// `FetchPlan` → 200 or a refusal: the crates this job's lock pins (once per worker).
    case plan
    /// `CrateChunkRequest` → a chunk of a `.crate` file, or of its registry index line.
    case crate
    /// `GitFetchRequest` → a chunk of a pack holding exactly one commit and its tree (`commit` header).
    case git
    /// `IndexFileRequest` → a crate's whole registry index file (resolving a lock-less project).
    case index
    /// `DependencyEntryRequest` → a chunk of a compiled-dependency cache entry's seal or archive
    /// (`size` -1: the farm has no entry for that key).
    case dependencies = "deps"
    /// A chunk of a new compiled-dependency cache entry (`DependencyStoreHeader`, the bytes as the
    /// payload): first its seal, then its archive from offset 0.
    case storeDependencies = "deps-store"
}

extension Subjects {
    /// Worker → fetch service, as requests.
    public static func fetch(_ workerID: String, _ kind: FetchKind) -> String { "kiln.worker.\(workerID).fetch.\(kind.rawValue)" }
    /// What the fetch service subscribes to.
    public static let fetchAll = "kiln.worker.*.fetch.*"

    /// The worker id and kind of a fetch subject (nil: not one).
    public static func parseFetch(_ subject: String) -> (workerID: String, kind: FetchKind)? {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard tokens.count == 5, tokens[0] == "kiln", tokens[1] == "worker", tokens[3] == "fetch",
            isValidToken(String(tokens[2])), let kind = FetchKind(rawValue: String(tokens[4]))
        else { return nil }
        return (String(tokens[2]), kind)
    }
}

/// One registry crate a `Cargo.lock` pins.
public struct LockedCrate: Codable, Sendable, Hashable {
    public var name: String
    public var version: String
    /// The lock file's `checksum`: lowercase hex SHA-256 of the `.crate` file.
    public var sha256: String

    public init(name: String, version: String, sha256: String) {
        self.name = name
        self.version = version
        self.sha256 = sha256
    }
}

/// The crates a job's lock pins, sent once before any crate is asked for; the fetch service serves
/// this worker nothing outside it.
public struct FetchPlan: Codable, Sendable {
    public var jobID: String
    public var crates: [LockedCrate]

    public init(jobID: String, crates: [LockedCrate]) {
        self.jobID = jobID
        self.crates = crates
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case crates
    }
}

public struct CrateChunkRequest: Codable, Sendable {
    public enum Part: String, Codable, Sendable {
        case crate
        /// The crate's line of its registry index file (what a local registry needs beside the file).
        case indexLine = "index-line"
    }

    public var jobID: String
    public var crate: LockedCrate
    public var part: Part
    public var offset: Int64
    /// Download it again whatever the farm's cache holds (the build's `skip_cache`).
    public var fresh: Bool?

    public init(jobID: String, crate: LockedCrate, part: Part, offset: Int64, fresh: Bool? = nil) {
        self.jobID = jobID
        self.crate = crate
        self.part = part
        self.offset = offset
        self.fresh = fresh
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case crate, part, offset, fresh
    }
}

public struct GitFetchRequest: Codable, Sendable {
    public var jobID: String
    public var url: String
    /// A branch, tag or full commit id.
    public var ref: String
    public var offset: Int64

    public init(jobID: String, url: String, ref: String, offset: Int64) {
        self.jobID = jobID
        self.url = url
        self.ref = ref
        self.offset = offset
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case url, ref, offset
    }
}

public struct IndexFileRequest: Codable, Sendable {
    public var jobID: String
    public var name: String
    public var offset: Int64

    public init(jobID: String, name: String, offset: Int64) {
        self.jobID = jobID
        self.name = name
        self.offset = offset
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case name, offset
    }
}

/// Part of a compiled-dependency cache entry (docs/dependency-cache.md).
public enum DependencyEntryPart: String, Codable, Sendable {
    /// The signed statement, the signer's key and its certificate (JSON, at most 64 KiB).
    case seal
    /// The tar.gz of the registry crates' compiled units.
    case archive
}

/// Asks for a chunk of the entry for `key` (hex SHA-256 of the build's dependency inputs).
public struct DependencyEntryRequest: Codable, Sendable {
    public var jobID: String
    public var key: String
    public var part: DependencyEntryPart
    public var offset: Int64

    public init(jobID: String, key: String, part: DependencyEntryPart, offset: Int64) {
        self.jobID = jobID
        self.key = key
        self.part = part
        self.offset = offset
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case key, part, offset
    }
}

/// Headers of a `deps-store` request (the payload is the chunk's bytes). The seal goes first, in one
/// chunk, and declares the archive's size and SHA-256; the archive's chunks follow in order; the
/// entry appears for other workers only once every byte arrived and the digest matches.
public enum DependencyStoreHeader {
    public static let job = "job"
    public static let key = "key"
    public static let part = "part"
    public static let offset = "offset"
    /// On the seal: the archive's whole size and hex SHA-256.
    public static let archiveSize = "archive-size"
    public static let archiveSha256 = "archive-sha256"
    /// Reply to the seal: "1" when the farm has an entry for the key already (send nothing more).
    public static let exists = "exists"
}

/// The reply headers of the fetch protocol.
public enum FetchReplyHeader {
    public static let status = "status"
    public static let message = "message"
    /// "1" when the same request may succeed later (the service was busy, its upstream did not answer).
    public static let retryable = "retryable"
    /// The whole object's size in bytes (a 200).
    public static let size = "size"
    /// The commit a git pack holds (a 200 to `git`).
    public static let commit = "commit"
    /// Whether the fetch service had the crate in its cache: `hit`, `miss`, or `evicted` (a corrupt
    /// entry it found, removed and fetched again); for the worker's log and fetch summary.
    public static let cache = "cache"
}

/// Names, versions and digests a fetch request may carry: checked by the worker before it asks and by
/// the fetch service before anything reaches a URL or a path.
public enum FetchNames {
    /// Crate names are ASCII letters, digits, `-` and `_` (at most 64).
    public static func isValidCrateName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }
    }

    public static func isValidVersion(_ version: String) -> Bool {
        !version.isEmpty && version.utf8.count <= 128
            && version.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 46 || $0 == 43 }
    }

    /// Lowercase hex of `bytes` bytes.
    public static func isLowercaseHex(_ s: String, bytes: Int) -> Bool {
        s.utf8.count == bytes * 2 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    public static func isValid(_ crate: LockedCrate) -> Bool {
        isValidCrateName(crate.name) && isValidVersion(crate.version) && isLowercaseHex(crate.sha256, bytes: 32)
    }

    /// The index file path of a crate (crates.io's layout: 1/a, 2/ab, 3/a/abc, ab/cd/abcd…).
    public static func indexPath(_ name: String) -> String {
        let n = name.lowercased()
        switch n.count {
        case 1: return "1/" + n
        case 2: return "2/" + n
        case 3: return "3/" + n.prefix(1) + "/" + n
        default: return n.prefix(2) + "/" + n.dropFirst(2).prefix(2) + "/" + n
        }
    }

    /// A git ref a request may carry: printable ASCII, no option-like or `..` forms, at most 255 bytes.
    public static func isValidGitRef(_ ref: String) -> Bool {
        !ref.isEmpty && ref.utf8.count <= 255 && !ref.hasPrefix("-") && !ref.contains("..") && ref.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
    }

    /// A full commit id (SHA-1, lowercase hex).
    public static func isCommitID(_ s: String) -> Bool { isLowercaseHex(s, bytes: 20) }
}
