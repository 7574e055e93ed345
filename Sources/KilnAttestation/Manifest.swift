/// `manifest.json`: every other file in the result tarball (all but `manifest.json` and
/// `evidence.json`, which are bound to it by the evidence) with path, digest, size and mode, plus the
/// input digests.
public struct Manifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        public var path: String
        public var sha256: String
        public var size: Int64
        /// "0644" or "0755".
        public var mode: String

        public init(path: String, sha256: String, size: Int64, mode: String) {
            self.path = path
            self.sha256 = sha256
            self.size = size
            self.mode = mode
        }
    }

    public struct Inputs: Codable, Sendable, Equatable {
        /// `git+<url>@<ref>` or the archive's name.
        public var source: String
        /// Commit id for git sources.
        public var gitCommit: String?
        public var gitTree: String?
        /// sha256 of the uploaded archive.
        public var archiveSha256: String?
        public var nonce: String

        enum CodingKeys: String, CodingKey {
            case source, nonce
            case gitCommit = "git_commit"
            case gitTree = "git_tree"
            case archiveSha256 = "archive_sha256"
        }

        public init(source: String, gitCommit: String? = nil, gitTree: String? = nil, archiveSha256: String? = nil, nonce: String) {
            self.source = source
            self.gitCommit = gitCommit
            self.gitTree = gitTree
            self.archiveSha256 = archiveSha256
            self.nonce = nonce
        }
    }

    public var version: Int
    public var jobID: String
    public var files: [File]
    public var inputs: Inputs

    enum CodingKeys: String, CodingKey {
        case version, files, inputs
        case jobID = "job_id"
    }

    public init(jobID: String, files: [File], inputs: Inputs) {
        self.version = 1
        self.jobID = jobID
        self.files = files.sorted { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        self.inputs = inputs
    }
}
