import Foundation

/// A scratch directory that removes itself.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String
    public var url: URL { URL(fileURLWithPath: path) }

    public init(prefix: String = "kiln-test") throws {
        StallWatchdog.start()
        let base = FileManager.default.temporaryDirectory.path
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
        path = String(cString: p)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    /// Removes the tree, first detaching any mount beneath it (a worker a test SIGKILLed leaves its
    /// workspace tmpfs mounted; the pool cleans that up in production, a test cleans up after itself).
    public func remove() {
        if geteuid() == 0, let handle = FileHandle(forReadingAtPath: "/proc/self/mountinfo"),
            let data = try? handle.readToEnd()
        {
            try? handle.close()
            let mounts = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line -> String? in
                let fields = line.split(separator: " ")
                guard fields.count > 4 else { return nil }
                return String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
            }
            for mount in mounts.filter({ $0.hasPrefix(path + "/") }).sorted(by: { $0.count > $1.count }) {
                umount2(mount, Int32(MNT_DETACH))
            }
        }
        try? FileManager.default.removeItem(atPath: path)
    }

    deinit { remove() }
}

extension FileManager {
    /// `createFile` that fails loudly: a test that could not write its fixture must not go on.
    public func writeFile(atPath path: String, contents: Data?, attributes: [FileAttributeKey: Any]? = nil) throws {
        guard createFile(atPath: path, contents: contents, attributes: attributes) else { throw LaunchError("cannot write \(path)") }
    }
}
