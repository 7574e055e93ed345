/// Why an archive was refused or could not be read/written. Each case names the entry at fault so a
/// user can fix the upload.
public struct ArchiveError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unreadable  // not a ZIP / tar.gz, or corrupt
        case unsafePath  // absolute, "..", or through a symlink
        case linkEscapes  // symlink / hard link pointing outside the tree
        case specialFile  // device node, FIFO, socket
        case tooManyEntries
        case tooLarge  // total uncompressed bytes over the limit
        case compressionRatio  // a zip bomb
        case empty
        case duplicateEntry  // a name that appears twice (which copy a tool keeps differs)
        case notAFile  // a link where only files and directories may be (a result archive)
        case io
    }

    public var code: Code
    public var message: String
    public var entry: String?

    public init(_ code: Code, _ message: String, entry: String? = nil) {
        self.code = code
        self.message = message
        self.entry = entry
    }

    public var description: String { message }
}
