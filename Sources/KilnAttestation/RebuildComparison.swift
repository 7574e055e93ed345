import Crypto
import Foundation
import KilnCore

/// What a rebuild found when it set its artifacts beside the original result's (#14): per artifact,
/// identical or different with both digests, and for a difference where the bytes part (sizes, first
/// differing offset, the ELF sections that differ). Signed by the rebuilding worker as the predicate
/// of an in-toto statement whose subjects are both results' artifacts, in the spirit of OSS Rebuild:
/// a verifier learns exactly which files did not reproduce instead of a bare yes or no.
public struct RebuildComparison: Codable, Sendable, Equatable {
    public static let predicateType = "https://kiln.dev/rebuild-comparison/v1"
    /// Subjects naming the original's artifacts carry this prefix; the rebuild's keep their names.
    public static let originalSubjectPrefix = "original/"
    /// Where the signed comparison sits in the rebuild's result tarball.
    public static let resultPath = "rebuild/comparison.json"

    public struct FileFacts: Codable, Sendable, Equatable {
        public var sha256: String
        public var size: Int64

        public init(sha256: String, size: Int64) {
            self.sha256 = sha256
            self.size = size
        }
    }

    public struct Artifact: Codable, Sendable, Equatable {
        public enum Verdict: String, Codable, Sendable {
            case identical, different
            case onlyInOriginal = "only_in_original"
            case onlyInRebuild = "only_in_rebuild"
        }
        public var name: String
        public var verdict: Verdict
        public var original: FileFacts?
        public var rebuilt: FileFacts?
        /// The first byte offset at which the two files differ (the shorter length when one is a prefix).
        public var firstDifferenceOffset: Int64?
        /// For ELF files: the sections whose bytes differ (nil when either file is not ELF).
        public var differingSections: [String]?
        /// For ELF files with symbols: the functions and data whose bytes differ (at most 20), the
        /// crates they belong to (likely causes first), the first differing symbol in file order, the
        /// symbols whose size differs, and the crates where the difference likely starts (see
        /// `ELFSymbolDiff.Result.causeCrates`: the dependency to look at).
        public var differingSymbols: [String]?
        public var differingCrates: [String]?
        public var firstDifferenceSymbol: String?
        public var resizedSymbols: [String]?
        public var causeCrates: [String]?

        enum CodingKeys: String, CodingKey {
            case name, verdict, original, rebuilt
            case firstDifferenceOffset = "first_difference_offset"
            case differingSections = "differing_sections"
            case differingSymbols = "differing_symbols"
            case differingCrates = "differing_crates"
            case firstDifferenceSymbol = "first_difference_symbol"
            case resizedSymbols = "resized_symbols"
            case causeCrates = "cause_crates"
        }
    }

    public var originalBuildID: String
    /// SHA-256 of the original result tarball the rebuild was compared with.
    public var originalResultSha256: String
    public var rebuildBuildID: String
    /// The rebuild's nonce (binds the comparison to this rebuild, as the provenance is).
    public var nonce: String
    /// True when every artifact is identical and both results have the same set.
    public var reproducible: Bool
    public var artifacts: [Artifact]

    enum CodingKeys: String, CodingKey {
        case originalBuildID = "original_build_id"
        case originalResultSha256 = "original_result_sha256"
        case rebuildBuildID = "rebuild_build_id"
        case nonce, reproducible, artifacts
    }

    public init(originalBuildID: String, originalResultSha256: String, rebuildBuildID: String, nonce: String, reproducible: Bool, artifacts: [Artifact]) {
        self.originalBuildID = originalBuildID
        self.originalResultSha256 = originalResultSha256
        self.rebuildBuildID = rebuildBuildID
        self.nonce = nonce
        self.reproducible = reproducible
        self.artifacts = artifacts
    }

    public var differingArtifacts: [String] { artifacts.filter { $0.verdict != .identical }.map(\.name) }

    /// One artifact's verdict from its two byte strings (nil: the result lacks it).
    public static func compare(name: String, original a: [UInt8]?, rebuilt b: [UInt8]?) -> Artifact {
        func facts(_ bytes: [UInt8]) -> FileFacts { FileFacts(sha256: SHA256.hash(data: bytes).hexString, size: Int64(bytes.count)) }
        var artifact = Artifact(name: name, verdict: .identical, original: a.map(facts), rebuilt: b.map(facts))
        guard let a, let b else {
            artifact.verdict = a == nil ? .onlyInRebuild : .onlyInOriginal
            return artifact
        }
        guard artifact.original != artifact.rebuilt else { return artifact }
        artifact.verdict = .different
        let common = min(a.count, b.count)
        var offset = 0
        while offset < common, a[offset] == b[offset] { offset += 1 }
        artifact.firstDifferenceOffset = Int64(offset)
        artifact.differingSections = ELFSectionTable.differingSections(original: a, rebuilt: b)
        if let symbols = ELFSymbolDiff.compare(original: a, rebuilt: b) {
            artifact.differingSymbols = symbols.symbols
            artifact.differingCrates = symbols.crates
            artifact.firstDifferenceSymbol = symbols.firstDifferenceSymbol
            artifact.resizedSymbols = symbols.resizedSymbols.isEmpty ? nil : symbols.resizedSymbols
            artifact.causeCrates = symbols.causeCrates
        }
        return artifact
    }

    /// The in-toto statement: subjects are the rebuild's artifacts under their names and the
    /// original's under `original/…`.
    public func statement() -> ComparisonStatement {
        var subjects: [ResourceDescriptor] = []
        for a in artifacts {
            if let r = a.rebuilt { subjects.append(ResourceDescriptor(name: a.name, digest: ["sha256": r.sha256])) }
        }
        for a in artifacts {
            if let o = a.original { subjects.append(ResourceDescriptor(name: Self.originalSubjectPrefix + a.name, digest: ["sha256": o.sha256])) }
        }
        return ComparisonStatement(subject: subjects, predicate: self)
    }

    /// Signs the statement (DSSE, in-toto payload type) with the worker's key.
    public func signed(with key: SigningKey) throws -> [UInt8] {
        try CanonicalJSON.encode(try DSSEEnvelope.sign(payload: try CanonicalJSON.encode(statement()), key: key))
    }
}

/// An in-toto v1 statement carrying a `RebuildComparison`.
public struct ComparisonStatement: Codable, Sendable, Equatable {
    public var type: String
    public var subject: [ResourceDescriptor]
    public var predicateType: String
    public var predicate: RebuildComparison

    enum CodingKeys: String, CodingKey {
        case type = "_type"
        case subject, predicateType, predicate
    }

    public init(subject: [ResourceDescriptor], predicate: RebuildComparison) {
        type = Statement.type
        self.subject = subject
        predicateType = RebuildComparison.predicateType
        self.predicate = predicate
    }
}
