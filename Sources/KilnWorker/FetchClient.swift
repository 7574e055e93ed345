import Crypto
import Foundation
import KilnBusClient
import KilnCore
import KilnMessages
import KilnProcess
import NIOCore

/// The worker's side of the fetch protocol (`FetchKind`): every build input that is not the user's
/// upload comes from the farm's fetch service over the bus, in chunks, and is checked here against a
/// digest this worker already trusts before anything unpacks or runs it — a crate against the
/// SHA-256 its `Cargo.lock` pins, a git pack by `git index-pack` (which hashes every object) and the
/// commit the request pinned. The worker itself never opens a network connection.
struct FetchClient: Sendable {
    let client: BusClient
    let workerID: String
    let jobID: String
    /// One reply's wait: a pack's first chunk waits for the clone, so it is generous.
    var timeout: TimeAmount = .seconds(660)
    /// Largest object accepted (a crate, a pack, an index file): more is refused as it arrives.
    var maxObjectBytes: Int64 = 2 << 30
    /// Attempts for a request the service answered as retryable (busy, upstream trouble) or did not answer.
    var attempts = 3
    /// The build's cancel switch (a user's cancel, SIGTERM): a wait for the service ends with it, so a
    /// stopped worker never sits out a reply's timeout with its workspace mounted.
    var cancel: CancelSwitch?

    /// A refusal or failure of the fetch service, as the build reports it.
    struct Failure: Error, CustomStringConvertible {
        var status: Int
        var message: String
        /// The service said the same request may succeed later (busy, upstream trouble), or said nothing.
        var retryable: Bool
        var description: String { message }

        init(status: Int, message: String, retryable: Bool = false) {
            self.status = status
            self.message = message
            self.retryable = retryable || status == 0
        }
    }

    private func send<Request: Encodable>(_ kind: FetchKind, _ body: Request) async throws -> BusMessage {
        try await send(kind, payload: Array(try JSONEncoder().encode(body)))
    }

    /// One request with raw bytes (and headers), retried as the service allows.
    func send(_ kind: FetchKind, payload: [UInt8], headers: [String: String]? = nil) async throws -> BusMessage {
        var lastFailure = Failure(status: 0, message: "no answer")
        for attempt in 0..<attempts {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(200 << attempt)) }
            let reply: BusMessage
            do {
                reply = try await requestUnlessCancelled(Subjects.fetch(workerID, kind), payload: payload, headers: headers)
            } catch BusClientError.noResponders {
                throw Failure(status: 503, message: "no fetch service is running on this farm (kiln-fetch)", retryable: true)
            } catch let error as BusClientError {
                lastFailure = Failure(status: 0, message: "the fetch service did not answer: \(error)")
                continue
            }
            let status = Int(reply.headers?[FetchReplyHeader.status] ?? "") ?? 0
            if status == 200 { return reply }
            lastFailure = Failure(
                status: status, message: String((reply.headers?[FetchReplyHeader.message] ?? "no message").prefix(1024)),
                retryable: reply.headers?[FetchReplyHeader.retryable] == "1")
            guard lastFailure.retryable else { throw lastFailure }
        }
        throw lastFailure
    }

    /// The request, or `BuildCancelled` as soon as the build's cancel switch fires.
    private func requestUnlessCancelled(_ subject: String, payload: [UInt8], headers: [String: String]?) async throws -> BusMessage {
        guard let cancel else { return try await client.request(subject, payload: payload, headers: headers, timeout: timeout) }
        return try await withThrowingTaskGroup(of: BusMessage?.self) { group in
            group.addTask { try await client.request(subject, payload: payload, headers: headers, timeout: timeout) }
            group.addTask {
                await cancel.wait()
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let reply = first else { throw BuildCancelled() }
            return reply
        }
    }

    /// A part of the compiled-dependency entry for `key`, consumed chunk by chunk (its size; -1: the
    /// farm has no entry for the key).
    func dependencyEntry(key: String, part: DependencyEntryPart, maxBytes: Int64, consume: (ArraySlice<UInt8>) throws -> Void) async throws -> Int64 {
        var limited = self
        limited.maxObjectBytes = maxBytes
        let (size, _) = try await limited.object("the compiled dependencies \(key.prefix(12))… (\(part.rawValue))", consume: consume) { offset in
            try await send(.dependencies, DependencyEntryRequest(jobID: jobID, key: key, part: part, offset: offset))
        }
        return size
    }

    /// Stores a compiled-dependency entry: its seal, then the archive at `file` in chunks. False when
    /// the farm had an entry for the key already.
    func storeDependencyEntry(key: String, seal: [UInt8], archive file: String, size: Int64, sha256: String, chunkBytes: Int) async throws -> Bool {
        var headers = [
            DependencyStoreHeader.job: jobID, DependencyStoreHeader.key: key, DependencyStoreHeader.part: DependencyEntryPart.seal.rawValue,
            DependencyStoreHeader.offset: "0", DependencyStoreHeader.archiveSize: String(size), DependencyStoreHeader.archiveSha256: sha256,
        ]
        let first = try await send(.storeDependencies, payload: seal, headers: headers)
        if first.headers?[DependencyStoreHeader.exists] == "1" { return false }
        guard let handle = FileHandle(forReadingAtPath: file) else { throw Failure(status: 500, message: "cannot read the dependency archive") }
        defer { try? handle.close() }  // read-only
        headers[DependencyStoreHeader.part] = DependencyEntryPart.archive.rawValue
        headers[DependencyStoreHeader.archiveSize] = nil
        headers[DependencyStoreHeader.archiveSha256] = nil
        var offset: Int64 = 0
        while offset < size {
            let chunk = [UInt8](try handle.read(upToCount: chunkBytes) ?? Data())
            guard !chunk.isEmpty else { throw Failure(status: 500, message: "the dependency archive ended at \(offset) of \(size) bytes") }
            headers[DependencyStoreHeader.offset] = String(offset)
            let reply = try await send(.storeDependencies, payload: chunk, headers: headers)
            if reply.headers?[DependencyStoreHeader.exists] == "1" { return false }
            offset += Int64(chunk.count)
        }
        return true
    }

    /// Reads an object chunk by chunk (`ask(offset)` → one reply) until `size` bytes, bounded.
    private func object(
        _ what: String, consume: (ArraySlice<UInt8>) throws -> Void, ask: (Int64) async throws -> BusMessage
    ) async throws -> (size: Int64, first: BusMessage) {
        var offset: Int64 = 0
        var first: BusMessage?
        var size: Int64 = -1
        repeat {
            let reply = try await ask(offset)
            if first == nil { first = reply }
            guard let declared = Int64(reply.headers?[FetchReplyHeader.size] ?? ""), declared >= -1, declared <= maxObjectBytes else {
                throw Failure(status: 502, message: "the fetch service declared no valid size for \(what) (at most \(maxObjectBytes) bytes)")
            }
            if size == -1 { size = declared }
            guard declared == size else { throw Failure(status: 502, message: "the fetch service changed the size of \(what) mid-transfer") }
            if size <= 0 { break }
            let chunk = reply.payloadBytes
            guard !chunk.isEmpty, offset + Int64(chunk.count) <= size else {
                throw Failure(status: 502, message: "the fetch service sent \(chunk.count) bytes at offset \(offset) of \(what) (\(size) bytes)")
            }
            try consume(chunk[...])
            offset += Int64(chunk.count)
        } while offset < size
        return (size, first!)
    }

    /// Files the crates this job's lock pins (the service then serves nothing else).
    func file(_ crates: [LockedCrate]) async throws {
        _ = try await send(.plan, FetchPlan(jobID: jobID, crates: crates))
    }

    /// A crate's bytes, checked against the SHA-256 the lock pins; and what the farm's cache said
    /// (`hit`, `miss`, `evicted`). `fresh`: the service downloads it again (`skip_cache`).
    func crate(_ crate: LockedCrate, fresh: Bool = false) async throws -> (bytes: [UInt8], cache: String) {
        var bytes: [UInt8] = []
        var hasher = SHA256()
        let (_, first) = try await object(
            "\(crate.name) \(crate.version)",
            consume: { chunk in
                bytes += chunk
                chunk.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            }
        ) { offset in try await send(.crate, CrateChunkRequest(jobID: jobID, crate: crate, part: .crate, offset: offset, fresh: fresh ? true : nil)) }
        guard hasher.finalize().hexString == crate.sha256 else {
            throw Failure(
                status: 502,
                message: "\(crate.name) \(crate.version) from the fetch service does not match the checksum Cargo.lock pins (\(crate.sha256.prefix(16))…): refused")
        }
        return (bytes, first.headers?[FetchReplyHeader.cache] ?? "miss")
    }

    /// The crate's registry index line, checked to name exactly this locked crate.
    func indexLine(_ crate: LockedCrate) async throws -> String {
        var bytes: [UInt8] = []
        _ = try await object("the index line of \(crate.name)", consume: { bytes += $0 }) { offset in
            try await send(.crate, CrateChunkRequest(jobID: jobID, crate: crate, part: .indexLine, offset: offset))
        }
        guard bytes.count <= 1 << 20, let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
            object["name"] as? String == crate.name, object["vers"] as? String == crate.version, object["cksum"] as? String == crate.sha256
        else {
            throw Failure(status: 502, message: "the index line the fetch service sent for \(crate.name) \(crate.version) does not name that locked crate")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A crate's whole registry index file (nil: the registry has no such crate).
    func indexFile(_ name: String) async throws -> [UInt8]? {
        var bytes: [UInt8] = []
        let (size, _) = try await object("the index file of \(name)", consume: { bytes += $0 }) { offset in
            try await send(.index, IndexFileRequest(jobID: jobID, name: name, offset: offset))
        }
        return size < 0 ? nil : bytes
    }

    /// The pack of `ref`'s commit, written to `file`; returns the commit the service says it holds
    /// (the caller checks the pack really holds it).
    func gitPack(url: String, ref: String, into file: String) async throws -> String {
        guard FileManager.default.createFile(atPath: file, contents: nil, attributes: [.posixPermissions: 0o600]),
            let handle = FileHandle(forWritingAtPath: file)
        else { throw Failure(status: 500, message: "the worker cannot write the pack to its scratch directory") }
        defer { try? handle.close() }  // every chunk was written through the handle; close loses nothing
        let (_, first) = try await object("the pack of \(url) \(ref)", consume: { chunk in try handle.write(contentsOf: Data(chunk)) }) { offset in
            try await send(.git, GitFetchRequest(jobID: jobID, url: url, ref: ref, offset: offset))
        }
        guard let commit = first.headers?[FetchReplyHeader.commit], FetchNames.isCommitID(commit) else {
            throw Failure(status: 502, message: "the fetch service named no valid commit for \(url) \(ref)")
        }
        return commit
    }
}
