import CArchive
import Foundation

/// Builds archives entry by entry, including entries no honest tool would write.
final class ArchiveFixture {
    enum Format { case tarGz, zip }
    enum Entry {
        case file(String, [UInt8], mode: UInt32 = 0o644)
        case directory(String)
        case symlink(String, target: String)
        case hardlink(String, target: String)
        case device(String)
        case fifo(String)
    }

    static func write(_ entries: [Entry], format: Format = .tarGz, to path: String) throws {
        _ = setlocale(LC_ALL, "C.UTF-8")
        let a = archive_write_new()!
        defer { archive_write_free(a) }
        switch format {
        case .tarGz:
            archive_write_set_format_pax_restricted(a)
            archive_write_add_filter_gzip(a)
        case .zip:
            archive_write_set_format_zip(a)
        }
        guard archive_write_open_filename(a, path) == ARCHIVE_OK else { throw POSIXError(.EIO) }
        for entry in entries {
            let e = archive_entry_new()!
            defer { archive_entry_free(e) }
            archive_entry_set_mtime(e, 1_700_000_000, 0)
            var data: [UInt8] = []
            switch entry {
            case .file(let name, let bytes, let mode):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, CA_AE_IFREG)
                archive_entry_set_perm(e, mode_t(mode))
                archive_entry_set_size(e, la_int64_t(bytes.count))
                data = bytes
            case .directory(let name):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, CA_AE_IFDIR)
                archive_entry_set_perm(e, 0o755)
            case .symlink(let name, let target):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, CA_AE_IFLNK)
                archive_entry_set_symlink(e, target)
            case .hardlink(let name, let target):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, CA_AE_IFREG)
                archive_entry_set_hardlink(e, target)
                archive_entry_set_size(e, 0)
            case .device(let name):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, 0o020000)
                archive_entry_set_rdevmajor(e, 1)
                archive_entry_set_rdevminor(e, 3)
            case .fifo(let name):
                archive_entry_set_pathname(e, name)
                archive_entry_set_filetype(e, 0o010000)
            }
            guard archive_write_header(a, e) >= ARCHIVE_WARN else {
                throw NSError(domain: "fixture", code: 1, userInfo: [NSLocalizedDescriptionKey: String(cString: archive_error_string(a))])
            }
            if !data.isEmpty { _ = data.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) } }
        }
        archive_write_close(a)
    }

    /// gzip of `bytes` as one member (libarchive's raw format + gzip filter).
    static func gzipMember(_ bytes: [UInt8]) -> [UInt8] {
        let a = archive_write_new()!
        defer { archive_write_free(a) }
        archive_write_set_format_raw(a)
        archive_write_add_filter_gzip(a)
        archive_write_set_filter_option(a, "gzip", "compression-level", "9")
        archive_write_set_bytes_per_block(a, 0)
        var out = [UInt8](repeating: 0, count: bytes.count + 65536)
        var used = 0
        archive_write_open_memory(a, &out, out.count, &used)
        let e = archive_entry_new()!
        archive_entry_set_pathname(e, "x")
        archive_entry_set_filetype(e, CA_AE_IFREG)
        archive_entry_set_size(e, la_int64_t(bytes.count))
        archive_write_header(a, e)
        archive_entry_free(e)
        _ = bytes.withUnsafeBytes { archive_write_data(a, $0.baseAddress, $0.count) }
        archive_write_close(a)
        return Array(out[0..<used])
    }

    /// A ustar header block for a regular file of `size` bytes (sizes up to 8 GiB − 1).
    static func ustarHeader(name: String, size: Int64) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, at offset: Int) { for (i, b) in s.utf8.enumerated() { h[offset + i] = b } }
        put(name, at: 0)
        put("0000644", at: 100)
        put("0000000", at: 108)
        put("0000000", at: 116)
        put(String(format: "%011llo", size), at: 124)
        put("14506004400", at: 136)
        put("        ", at: 148)
        h[156] = UInt8(ascii: "0")
        put("ustar", at: 257)
        h[262] = 0
        put("00", at: 263)
        let sum = h.reduce(0) { $0 + Int($1) }
        put(String(format: "%06o", sum), at: 148)
        h[154] = 0
        h[155] = UInt8(ascii: " ")
        return h
    }

    /// A tar.gz that unpacks to `entries × entrySize` bytes of zeros, built from concatenated gzip
    /// members of 1 MiB of zeros, so it takes milliseconds to make and megabytes to store.
    static func bomb(entries: Int, entrySize: Int64, to path: String) throws {
        let mib = gzipMember([UInt8](repeating: 0, count: 1 << 20))
        try FileManager.default.writeFile(atPath: path, contents: nil)
        let fh = FileHandle(forWritingAtPath: path)!
        defer { try? fh.close() }
        for i in 0..<entries {
            try fh.write(contentsOf: gzipMember(ustarHeader(name: "zeros-\(i).bin", size: entrySize)))
            let chunks = Int(entrySize >> 20)
            for _ in 0..<chunks { try fh.write(contentsOf: mib) }
        }
    }
}
