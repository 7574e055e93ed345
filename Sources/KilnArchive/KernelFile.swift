import Foundation

/// Reads a file the kernel generates (/proc, /sys, configfs) to its end.
///
/// Why not `FileManager.contents(atPath:)`: such files report a size of 0, and Foundation then
/// reads a single page — /proc/self/mountinfo on a host with a few dozen mounts, or a SEV-SNP
/// certificate table in configfs-tsm's `auxblob`, came back cut at about 4 KiB.
public enum KernelFile {
    public static func read(_ path: String, limit: Int = 16 << 20) -> Data? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        var data = Data()
        while data.count < limit, let chunk = try? handle.read(upToCount: 64 * 1024), !chunk.isEmpty {
            data.append(chunk)
        }
        return data
    }
}
