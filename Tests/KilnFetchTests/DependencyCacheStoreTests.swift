import Crypto
import Foundation
import KilnFetch
import Testing

/// #31 item 3: the fetch service's store of compiled-dependency entries, on a real directory: an
/// upload becomes an entry only whole and matching, the first entry for a key stays, and every bound
/// holds.
struct DependencyCacheStoreTests {
    static let now = ContinuousClock.now
    static func key(_ n: Int) -> String { String(repeating: String(n % 10), count: 64) }

    func store(maxBytes: Int64 = 1 << 30, maxUploads: Int = 4) throws -> (DependencyCacheStore, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-depstore-\(UUID().uuidString)").path
        var configuration = DependencyCacheStore.Configuration(directory: dir)
        configuration.maxBytes = maxBytes
        configuration.maxEntryBytes = 1 << 20
        configuration.maxUploads = maxUploads
        return (try DependencyCacheStore(configuration: configuration), dir)
    }

    func reason<T>(_ body: () throws(FetchRefusal) -> T) -> FetchRefusal.Reason? {
        do {
            _ = try body()
            return nil
        } catch { return error.reason }
    }

    @Test func anUploadInOrderThatMatchesBecomesAnEntryAndTheFirstEntryStays() throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }  // test cleanup
        let archive = [UInt8](repeating: 7, count: 3000)
        let sha = SHA256.hash(data: archive).map { String(format: "%02x", $0) }.joined()
        #expect(try store.begin(worker: "w1", key: Self.key(1), seal: Array("seal".utf8), archiveSize: 3000, archiveSha256: sha, now: Self.now) == .accepted)
        #expect(!store.hasEntry(Self.key(1)), "nothing is served before the last byte")
        #expect(try store.append(worker: "w1", key: Self.key(1), offset: 0, bytes: Array(archive[0..<1000])) == .accepted)
        #expect(try store.append(worker: "w1", key: Self.key(1), offset: 1000, bytes: Array(archive[1000...])) == .stored)
        #expect(store.read(key: Self.key(1), part: "archive", offset: 0, length: 5000)?.bytes == archive)
        #expect(store.read(key: Self.key(1), part: "seal", offset: 0, length: 100)?.bytes == Array("seal".utf8))
        // A second worker's upload for the same key is told the entry exists.
        #expect(try store.begin(worker: "w2", key: Self.key(1), seal: [1], archiveSize: 1, archiveSha256: sha, now: Self.now) == .exists)
        #expect(store.read(key: Self.key(1), part: "../seal", offset: 0, length: 10) == nil, "only the two parts are served")
    }

    @Test func anUploadOutOfOrderOrNotMatchingItsDigestIsDropped() throws {
        let (store, dir) = try store()
        defer { try? FileManager.default.removeItem(atPath: dir) }  // test cleanup
        let sha = String(repeating: "0", count: 64)
        _ = try store.begin(worker: "w1", key: Self.key(2), seal: [1], archiveSize: 10, archiveSha256: sha, now: Self.now)
        let refusal1 = reason { () throws(FetchRefusal) in try store.append(worker: "w1", key: Self.key(2), offset: 5, bytes: [1, 2]) }
        #expect(refusal1 == .badRequest)
        let refusal2 = reason { () throws(FetchRefusal) in try store.append(worker: "w1", key: Self.key(2), offset: 0, bytes: [1]) }
        #expect(refusal2 == .badRequest, "the upload was dropped")
        _ = try store.begin(worker: "w1", key: Self.key(2), seal: [1], archiveSize: 4, archiveSha256: sha, now: Self.now)
        let refusal3 = reason { () throws(FetchRefusal) in try store.append(worker: "w1", key: Self.key(2), offset: 0, bytes: [1, 2, 3, 4, 5]) }
        #expect(refusal3 == .badRequest, "past the declared size")
        _ = try store.begin(worker: "w1", key: Self.key(2), seal: [1], archiveSize: 4, archiveSha256: sha, now: Self.now)
        let refusal4 = reason { () throws(FetchRefusal) in try store.append(worker: "w1", key: Self.key(2), offset: 0, bytes: [1, 2, 3, 4]) }
        #expect(refusal4 == .badRequest, "digest mismatch")
        #expect(!store.hasEntry(Self.key(2)))
        let refusal5 = reason { () throws(FetchRefusal) in try store.append(worker: "w3", key: Self.key(2), offset: 0, bytes: [1]) }
        #expect(refusal5 == .badRequest, "no seal, no upload")
    }

    @Test func sizeUploadsAndTotalAreBounded() throws {
        let (store, dir) = try store(maxBytes: 2500, maxUploads: 1)
        defer { try? FileManager.default.removeItem(atPath: dir) }  // test cleanup
        let sha = String(repeating: "0", count: 64)
        let refusal6 = reason { () throws(FetchRefusal) in
            try store.begin(worker: "w1", key: Self.key(3), seal: [1], archiveSize: 2 << 20, archiveSha256: sha, now: Self.now)
        }
        #expect(refusal6 == .tooLarge)
        let refusal7 = reason { () throws(FetchRefusal) in
            try store.begin(worker: "w1", key: Self.key(3), seal: [UInt8](repeating: 0, count: 65 << 10), archiveSize: 1, archiveSha256: sha, now: Self.now)
        }
        #expect(refusal7 == .tooLarge)
        let refusal8 = reason { () throws(FetchRefusal) in try store.begin(worker: "w1", key: "../x", seal: [1], archiveSize: 1, archiveSha256: sha, now: Self.now) }
        #expect(refusal8 == .badRequest)
        _ = try store.begin(worker: "w1", key: Self.key(3), seal: [1], archiveSize: 1, archiveSha256: sha, now: Self.now)
        let refusal9 = reason { () throws(FetchRefusal) in try store.begin(worker: "w2", key: Self.key(4), seal: [1], archiveSize: 1, archiveSha256: sha, now: Self.now) }
        #expect(refusal9 == .quota)
        // Past the upload window the stale upload is dropped and another worker may upload.
        store.housekeeping(now: Self.now + .seconds(7200), window: .seconds(3600))
        let refusal10 = reason { () throws(FetchRefusal) in try store.begin(worker: "w2", key: Self.key(4), seal: [1], archiveSize: 1, archiveSha256: sha, now: Self.now)
        }
        #expect(refusal10 == nil)
        store.housekeeping(now: Self.now + .seconds(20000), window: .seconds(3600))
        // Two entries of 1000 + 1 bytes under a 2500-byte bound: a third evicts the least recently used.
        for n in 5...7 {
            let bytes = [UInt8](repeating: UInt8(n), count: 1000)
            let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
            _ = try store.begin(worker: "w\(n)", key: Self.key(n), seal: [1], archiveSize: 1000, archiveSha256: digest, now: Self.now)
            #expect(try store.append(worker: "w\(n)", key: Self.key(n), offset: 0, bytes: bytes) == .stored)
            // Last used n minutes after the first (the store keeps recency in the entry's time).
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: Double(n - 10) * 60)], ofItemAtPath: dir + "/entries/" + Self.key(n))
        }
        store.housekeeping(now: Self.now, window: .seconds(3600))
        #expect(store.totalBytes() <= 2500)
        #expect(!store.hasEntry(Self.key(5)) && store.hasEntry(Self.key(7)))
    }
}
