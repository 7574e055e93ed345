/// What the gateway sends a worker: the user's request, validated, plus the job id.
public struct BuildRequest: Codable, Sendable, Equatable {
    public var jobID: String
    /// Hex, at most 16 bytes.
    public var nonce: String
    public var repoURL: String?
    public var repoRef: String?
    /// Base64 ZIP or tar.gz, inline when small enough for one frame.
    public var sourceData: String?
    public var sourceName: String?
    /// A larger upload: fetched in chunks from `Subjects.source(job)`.
    public var source: SourceReference?
    /// Fetch every dependency from the registry even if the host's crate cache has it.
    public var skipCache: Bool?
    public var buildConfig: BuildConfig?
    public var buildOptions: BuildOptions?
    /// Which attempt this is (1 for the first); a later attempt numbers its events from `firstSeq`,
    /// after the earlier attempts' events, so the job's stream stays one sequence.
    public var attempt: Int?
    public var firstSeq: Int?
    /// A rebuild (#14): the original result to compare this build's artifacts with, fetched in chunks
    /// from `Subjects.source(job)` with the `blob: original` header.
    public var compareWith: OriginalResult?

    /// The result a rebuild is compared with.
    public struct OriginalResult: Codable, Sendable, Equatable {
        public var buildID: String
        public var sha256: String
        public var size: Int64
        public var chunkSize: Int

        enum CodingKeys: String, CodingKey {
            case sha256, size
            case buildID = "build_id"
            case chunkSize = "chunk_size"
        }

        public init(buildID: String, sha256: String, size: Int64, chunkSize: Int) {
            self.buildID = buildID
            self.sha256 = sha256
            self.size = size
            self.chunkSize = chunkSize
        }
    }

    enum CodingKeys: String, CodingKey {
        case nonce, source
        case jobID = "job_id"
        case repoURL = "repo_url"
        case repoRef = "repo_ref"
        case sourceData = "source_data"
        case sourceName = "source_name"
        case skipCache = "skip_cache"
        case buildConfig = "build_config"
        case buildOptions = "build_options"
        case attempt
        case firstSeq = "first_seq"
        case compareWith = "compare_with"
    }

    public init(
        jobID: String, nonce: String, repoURL: String? = nil, repoRef: String? = nil, sourceData: String? = nil,
        sourceName: String? = nil, source: SourceReference? = nil
    ) {
        self.jobID = jobID
        self.nonce = nonce
        self.repoURL = repoURL
        self.repoRef = repoRef
        self.sourceData = sourceData
        self.sourceName = sourceName
        self.source = source
    }

    public struct SourceReference: Codable, Sendable, Equatable {
        public var sha256: String
        public var size: Int64
        public var chunkSize: Int
        public var name: String?

        enum CodingKeys: String, CodingKey {
            case sha256, size, name
            case chunkSize = "chunk_size"
        }

        public init(sha256: String, size: Int64, chunkSize: Int, name: String?) {
            self.sha256 = sha256
            self.size = size
            self.chunkSize = chunkSize
            self.name = name
        }
    }
}

/// The worker's answer to a dispatch request.
public struct DispatchReply: Codable, Sendable, Equatable {
    public var accepted: Bool
    public var workerID: String?
    public var code: Int?
    public var message: String?

    enum CodingKeys: String, CodingKey {
        case accepted, code, message
        case workerID = "worker_id"
    }

    public static func accept(workerID: String) -> DispatchReply {
        DispatchReply(accepted: true, workerID: workerID, code: nil, message: nil)
    }

    public static func alreadyBusy(workerID: String) -> DispatchReply {
        DispatchReply(accepted: false, workerID: workerID, code: 409, message: "this worker has already accepted a build")
    }

    public init(accepted: Bool, workerID: String?, code: Int?, message: String?) {
        self.accepted = accepted
        self.workerID = workerID
        self.code = code
        self.message = message
    }
}

/// `kiln.workers.ready`: a worker waiting for a build, and what it can build — the gateway sends a job
/// whose request needs more than any worker offers (a target, network, resources) only to a worker
/// that announced it.
public struct WorkerReady: Codable, Sendable, Equatable {
    public var workerID: String
    /// `cargo`, `nix`.
    public var toolchains: [String]
    public var arch: String
    /// Rust target triples whose standard library the worker's toolchain has.
    public var targets: [String]?
    /// Whether it gives network to builds that ask for it (`--allow-internet-builds`).
    public var internetAccess: Bool?
    /// The most it gives one build (a `build_config` may ask for up to this).
    public var limits: BuildConfig?
    /// What isolates it from the host: `process`, or `vm-kvm` / `vm-tcg` for a VM worker (the
    /// accelerator its launch chose), so that operators see which kind runs and how fast each boots.
    public var isolation: String?

    enum CodingKeys: String, CodingKey {
        case toolchains, arch, targets, limits, isolation
        case workerID = "worker_id"
        case internetAccess = "internet_access"
    }

    public init(workerID: String, toolchains: [String], arch: String, targets: [String]? = nil, internetAccess: Bool? = nil, limits: BuildConfig? = nil) {
        self.workerID = workerID
        self.toolchains = toolchains
        self.arch = arch
        self.targets = targets
        self.internetAccess = internetAccess
        self.limits = limits
    }
}

/// `kiln.build.<job>.control`.
public struct ControlMessage: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable {
        /// Kill the build; end with `cancelled`.
        case cancel
        /// Re-send events from `from_seq` on.
        case replay
        /// The gateway has stored every event through `seq`; after the terminal event is acked the worker exits.
        case ack
    }

    public var action: Action
    public var fromSeq: Int?
    public var seq: Int?
    /// When set, only this worker acts on the message (a job may briefly have had two workers if an
    /// acceptance was lost; only the recorded one may continue).
    public var workerID: String?

    enum CodingKeys: String, CodingKey {
        case action, seq
        case fromSeq = "from_seq"
        case workerID = "worker_id"
    }

    public init(action: Action, fromSeq: Int? = nil, seq: Int? = nil, workerID: String? = nil) {
        self.action = action
        self.fromSeq = fromSeq
        self.seq = seq
        self.workerID = workerID
    }
}

/// The gateway's answer to a result chunk. A refusal below 500 is final (the job, the worker or the
/// chunk is wrong); 500 and above is the gateway's store or disk failing for a moment, and the chunk
/// is sent again.
public struct ResultChunkAck: Codable, Sendable, Equatable {
    public var ok: Bool
    public var code: Int?
    public var message: String?

    public init(ok: Bool, code: Int? = nil, message: String? = nil) {
        self.ok = ok
        self.code = code
        self.message = message
    }

    /// Whether the chunk should be sent again rather than the upload given up.
    public var isTransient: Bool { !ok && (code ?? 0) >= 500 }

    /// The error a sender throws for a transient refusal (and retries on).
    public struct Unavailable: Error, CustomStringConvertible {
        public var message: String?
        public init(message: String? = nil) { self.message = message }
        public var description: String { "the gateway could not store the chunk right now" + (message.map { ": \($0)" } ?? "") }
    }
}

/// Headers of a result chunk request on `kiln.build.<job>.result` (design §3).
public enum ResultChunkHeaders {
    public static let index = "index"
    public static let count = "count"
    public static let sha256 = "sha256"
    public static let size = "size"
    public static let workerID = "worker_id"
}
