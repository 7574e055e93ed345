import Foundation
import KilnTestSupport
import NIOHTTP1
import Testing

/// #12 item 2: request bodies stream to disk (never whole in memory), their size limit holds while
/// they stream, and concurrent uploads are bounded per caller and in total (429 + Retry-After).
@Suite(.serialized) struct UploadLimitsTests {
    static let boundary = "KiLnUpl0ad"

    /// An upload's bytes up to the archive, and after it.
    static func multipart(nonce: String = "abcd", archiveBytes: Int, token: String? = nil) -> (head: [UInt8], tail: [UInt8]) {
        let preamble =
            "--\(boundary)\r\nContent-Disposition: form-data; name=\"nonce\"\r\n\r\n\(nonce)\r\n"
            + "--\(boundary)\r\nContent-Disposition: form-data; name=\"source\"; filename=\"big.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n"
        let tail = "\r\n--\(boundary)--\r\n"
        let length = preamble.utf8.count + archiveBytes + tail.utf8.count
        let head =
            "POST /build HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=\(boundary)\r\nContent-Length: \(length)\r\n"
            + (token.map { "Authorization: Bearer \($0)\r\n" } ?? "") + "\r\n" + preamble
        return (Array(head.utf8), Array(tail.utf8))
    }

    static func status(_ s: RawSocket, timeout: Double = 30) async throws -> (Int, String) {
        let text = String(decoding: try await s.readAll(timeout: timeout).prefix(4096), as: UTF8.self)
        let code = text.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return (code, text)
    }

    static func gauge(_ metrics: String, _ name: String) -> Double? {
        metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    @Test func anOversizedBodyIsRefusedAtTheLimitWhileItStreamsAndLeavesNoFile() async throws {
        let c = try await TestCluster(gatewayArgs: ["--max-body", "1048576"])
        defer { c.stop() }
        // It claims 1 GiB; the gateway answers once 1 MiB has arrived, without waiting for the rest.
        let upload = Self.multipart(archiveBytes: 1 << 30)
        let s = try RawSocket(port: c.gateway.port)
        try await s.send(upload.head + [0x1F, 0x8B])
        let chunk = [UInt8](repeating: 0x41, count: 64 << 10)
        for _ in 0..<40 { try? await s.send(chunk) }
        let (code, text) = try await Self.status(s, timeout: 10)
        #expect(code == 413 && text.contains("larger than 1048576 bytes"), "\(text)")
        let incoming = try FileManager.default.contentsOfDirectory(atPath: c.gateway.dataDirectory + "/incoming")
        #expect(incoming.isEmpty, "\(incoming)")
        let metrics = try await HTTPGet.get(port: c.gateway.port, path: "/metrics").body
        #expect(Self.gauge(metrics, "kiln_gateway_uploads_in_progress") == 0)
        #expect((Self.gauge(metrics, "kiln_gateway_upload_bytes_received_total") ?? 0) > 1_048_576)
    }

    /// Found by FuzzSubmissionBodies: MultipartKit 4.7.1 indexed a 128-entry table with a header-name
    /// byte, so one byte ≥ 0x80 there trapped and killed the whole gateway. The attack, over a socket.
    @Test func aNonASCIIHeaderNameIsA400NotACrash() async throws {
        let c = try await TestCluster()
        defer { c.stop() }
        let body: [UInt8] = Array("--B\r\n".utf8) + [0xBD] + Array("ontent-Disposition: form-data; name=\"nonce\"\r\n\r\nabcd\r\n--B--\r\n".utf8)
        let s = try RawSocket(port: c.gateway.port)
        try await s.send(
            Array("POST /build HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
                + body)
        let (code, text) = try await Self.status(s, timeout: 10)
        #expect(code == 400 && text.contains("header"), "\(text)")
        #expect(c.gateway.process.isRunning, "the gateway died: \(c.gateway.process.output.suffix(5))")
        await #expect(try HTTPGet.get(port: c.gateway.port, path: "/healthz").status == 200)
    }

    @Test func concurrentUploadsAreBoundedPerCallerAndInTotal() async throws {
        let c = try await TestCluster(gatewayArgs: [
            "--token", "alice:user:a-token", "--token", "bob:user:b-token",
            "--max-uploads-per-caller", "2", "--max-uploads", "3",
        ])
        defer { c.stop() }
        let archive = try await Fixtures.archive(Fixtures.helloCrate(), root: "p", zip: false)
        func start(_ token: String) async throws -> RawSocket {
            let s = try RawSocket(port: c.gateway.port)
            let upload = Self.multipart(archiveBytes: archive.count, token: token)
            try await s.send(upload.head + archive.prefix(10))
            return s
        }
        func finish(_ s: RawSocket, _ token: String) async throws -> (Int, String) {
            try await s.send(Array(archive.dropFirst(10)) + Self.multipart(archiveBytes: archive.count, token: token).tail)
            return try await Self.status(s, timeout: 5)
        }
        func inProgress(_ n: Double) async throws {
            let reached = try await eventually {
                await Self.gauge(try HTTPGet.get(port: c.gateway.port, path: "/metrics").body, "kiln_gateway_uploads_in_progress") == n
            }
            #expect(reached, "uploads in progress never reached \(n)")
        }
        let a1 = try await start("a-token")
        let a2 = try await start("a-token")
        try await inProgress(2)
        let a3 = try await start("a-token")
        let (code3, text3) = try await Self.status(a3, timeout: 5)
        #expect(code3 == 429 && text3.contains("2 uploads per caller") && text3.lowercased().contains("retry-after: 5"), "\(text3)")
        let b1 = try await start("b-token")
        try await inProgress(3)
        let b2 = try await start("b-token")
        let (codeB, textB) = try await Self.status(b2, timeout: 5)
        #expect(codeB == 429 && textB.contains("at most 3 uploads"), "\(textB)")
        // Finishing one frees its slot.
        let (done, doneText) = try await finish(a1, "a-token")
        #expect(done == 200 && doneText.contains("job_id"), "\(doneText)")
        try await inProgress(2)
        let a4 = try await start("a-token")
        try await inProgress(3)
        for (s, t) in [(a2, "a-token"), (b1, "b-token"), (a4, "a-token")] {
            let (code, text) = try await finish(s, t)
            #expect(code == 200, "\(text)")
        }
        let metrics = try await HTTPGet.get(port: c.gateway.port, path: "/metrics").body
        #expect(metrics.contains("kiln_gateway_requests_limited_total{limit=\"uploads\"} 2"), "\(metrics)")
        #expect(Self.gauge(metrics, "kiln_gateway_uploads_in_progress") == 0)
    }

    /// Fifty callers upload 3 MiB archives at once as JSON base64 (200 MiB of bodies in all, about
    /// 350 MiB if the gateway held body and archive, as it did); its peak RSS stays far below that.
    /// Small enough for a debug build; `make bench` measures 50 × 100 MiB with the release build.
    @Test func fiftyConcurrentUploadsKeepTheGatewaySmall() async throws {
        let c = try await TestCluster(gatewayArgs: ["--max-uploads", "50", "--max-uploads-per-caller", "50"])
        defer { c.stop() }
        let clients = 50
        let archiveBytes = 3 << 20
        var rng = SeededGenerator(seed: 50)
        let archive: [UInt8] = [0x1F, 0x8B] + (0..<archiveBytes - 2).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let text = Array(Data(archive).base64EncodedString().utf8)
        let prefix = Array("{\"nonce\":\"abcd\",\"source_data\":\"".utf8)
        let suffix = Array("\"}".utf8)
        let head = Array(
            "POST /build HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(prefix.count + text.count + suffix.count)\r\n\r\n"
                .utf8)
        let sockets = try (0..<clients).map { _ in try RawSocket(port: c.gateway.port) }
        for s in sockets { try await s.send(head + prefix) }
        // Round robin, 64 KiB at a time, so all fifty bodies are in flight together.
        var sent = 0
        while sent < text.count {
            let piece = Array(text[sent..<min(text.count, sent + (64 << 10))])
            for s in sockets { try await s.send(piece) }
            sent += piece.count
        }
        var jobs = 0
        for s in sockets {
            try await s.send(suffix)
            let (code, answer) = try await Self.status(s, timeout: 60)
            #expect(code == 200, "\(answer)")
            if answer.contains("job_id") { jobs += 1 }
        }
        #expect(jobs == clients)
        let peakKiB = try Self.peakRSSKiB(pid: c.gateway.process.pid)
        print("fifty concurrent 3 MiB uploads: gateway peak RSS \(peakKiB / 1024) MiB")
        #expect(peakKiB < 150 << 10, "gateway peak RSS \(peakKiB / 1024) MiB")
        // Above the inline limit, each archive became its job's upload file, byte for byte.
        let uploads = try FileManager.default.contentsOfDirectory(atPath: c.gateway.dataDirectory + "/uploads")
        #expect(uploads.count == clients)
        if let first = uploads.first {
            #expect(FileManager.default.contents(atPath: c.gateway.dataDirectory + "/uploads/" + first) == Data(archive))
        }
    }

    static func peakRSSKiB(pid: Int32) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
        else { throw LaunchError("no VmHWM for \(pid)") }
        return kib
    }
}
