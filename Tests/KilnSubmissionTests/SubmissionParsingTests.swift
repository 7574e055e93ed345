import Foundation
import KilnTestSupport
import NIOCore
import Testing

@testable import KilnSubmission

/// The streaming readers behind `POST /build` (#12 item 2): whatever the chunking, they produce what a
/// whole-body parse would, and every hostile shape is refused with a 400 while memory stays bounded.
struct SubmissionParsingTests {
    /// Feeds `body` in pieces of `size` bytes (the last may be shorter).
    static func scanJSON(_ body: [UInt8], pieces size: Int) throws -> (fields: [String: String], archive: [UInt8], sawArchive: Bool) {
        var scanner = SubmissionJSONScanner()
        var archive: [UInt8] = []
        var start = 0
        while start < body.count {
            let end = min(body.count, start + size)
            try body[start..<end].withUnsafeBytes { bytes in try scanner.consume(bytes, archive: &archive) }
            start = end
        }
        try scanner.finish(archive: &archive)
        return (scanner.fields, archive, scanner.sawArchive)
    }

    static func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    @Test(arguments: [1, 2, 3, 7, 64, 4096, 1 << 20])
    func jsonArchivesDecodeTheSameWhateverTheChunking(pieces: Int) throws {
        let archive = Self.randomBytes(70_001, seed: UInt64(pieces))
        let body: [String: Any] = [
            "nonce": "ab\u{00e9}\"\\n", "source_data": Data(archive).base64EncodedString(),
            "source_name": "p.tar.gz", "extra": ["nested": [1, 2, ["x": "}]\""]], "n": -1.5e3, "t": true, "z": NSNull()],
        ]
        let bytes = Array(try JSONSerialization.data(withJSONObject: body, options: [.withoutEscapingSlashes]))
        let r = try Self.scanJSON(bytes, pieces: pieces)
        #expect(r.archive == archive)
        #expect(r.fields == ["nonce": "ab\u{00e9}\"\\n", "source_name": "p.tar.gz"])
        #expect(r.sawArchive)
    }

    @Test func escapedSlashesURLSafeAlphabetMissingPaddingAndLineBreaksAreBase64TooJustAsWholeStringsWere() throws {
        let archive = Self.randomBytes(1000, seed: 7)
        let standard = Data(archive).base64EncodedString(options: [.lineLength76Characters, .endLineWithLineFeed])
        let escaped = standard.replacingOccurrences(of: "/", with: "\\/").replacingOccurrences(of: "\n", with: "\\n")
        #expect(try Self.scanJSON(Array("{\"source_data\":\"\(escaped)\"}".utf8), pieces: 5).archive == archive)
        let urlSafe = Data(archive).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .trimmingCharacters(in: CharacterSet(charactersIn: "="))
        #expect(try Self.scanJSON(Array("{\"source_data\":\"\(urlSafe)\"}".utf8), pieces: 3).archive == archive)
        let unicode = Data([0xFB, 0xFF]).base64EncodedString().replacingOccurrences(of: "+", with: "\\u002B").replacingOccurrences(of: "/", with: "\\u002f")
        #expect(try Self.scanJSON(Array("{\"source_data\":\"\(unicode)\"}".utf8), pieces: 1).archive == [0xFB, 0xFF])
    }

    @Test(arguments: [
        ("[1,2]", "must be an object"),
        ("\"x\"", "must be an object"),
        ("{\"nonce\": ", "not valid JSON"),
        ("{\"nonce\": 12}", "'nonce' must be a string"),
        ("{\"nonce\": {\"a\": 1}}", "'nonce' must be a string"),
        ("{\"nonce\": \"ab\", \"nonce\": \"cd\"}", "appears more than once"),
        ("{\"source_data\": \"QUJD\", \"source_data\": \"QUJD\"}", "appears more than once"),
        ("{\"source_data\": \"@@@\"}", "not valid base64"),
        ("{\"source_data\": \"QUJDR\"}", "not valid base64"),
        ("{\"source_data\": \"QQ==QQ\"}", "not valid base64"),
        ("{\"source_data\": \"QQ\\u00e9\"}", "not valid base64"),
        ("{\"a\": 1,}", "not valid JSON"),
        ("{\"a\": tru}", "not valid JSON"),
        ("{\"a\": 1} x", "not valid JSON"),
        ("{\"a\" 1}", "not valid JSON"),
        ("{\"a\": \"raw\u{01}control\"}", "not valid JSON"),
        ("", "not valid JSON"),
    ])
    func malformedJSONIsRefusedWithWhatToFix(body: String, message: String) {
        #expect {
            _ = try Self.scanJSON(Array(body.utf8), pieces: 2)
        } throws: { error in
            guard let e = error as? SubmissionError else { return false }
            return e.message.contains(message)
        }
    }

    @Test func unknownFieldsAreSkippedWithoutBeingKeptAndKnownFieldsAreBounded() throws {
        // A 5 MiB unknown string and a deep unknown array are skipped; the scanner keeps nothing of them.
        let filler = String(repeating: "x", count: 5 << 20)
        let r = try Self.scanJSON(
            Array("{\"pad\": \"\(filler)\", \"deep\": \(String(repeating: "[", count: 60))\(String(repeating: "]", count: 60)), \"nonce\": \"abcd\"}".utf8), pieces: 65536
        )
        #expect(r.fields == ["nonce": "abcd"])
        for (body, message) in [
            ("{\"nonce\": \"\(String(repeating: "a", count: 70_000))\"}", "longer than"),
            ("{\"\(String(repeating: "k", count: 300))\": 1}", "key is longer"),
            ("{\"deep\": \(String(repeating: "[", count: 70))}", "deeper than 64"),
            ("{" + (0..<70).map { "\"f\($0)\": 1" }.joined(separator: ",") + "}", "more than 64 fields"),
        ] {
            #expect(throws: SubmissionError.self, "\(message)") { _ = try Self.scanJSON(Array(body.utf8), pieces: 4096) }
            do { _ = try Self.scanJSON(Array(body.utf8), pieces: 4096) } catch let error as SubmissionError {
                #expect(error.message.contains(message), "\(error.message)")
            }
        }
    }

    // MARK: multipart

    static func form(_ parts: [(String, String?, [UInt8])], boundary: String = "KiLnB0und") -> [UInt8] {
        var body: [UInt8] = []
        for (name, filename, content) in parts {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\(filename.map { "; filename=\"\($0)\"" } ?? "")\r\n\r\n".utf8)
            body += content + Array("\r\n".utf8)
        }
        return body + Array("--\(boundary)--\r\n".utf8)
    }

    static func readForm(_ body: [UInt8], pieces size: Int, boundary: String = "KiLnB0und") throws(SubmissionError) -> (SubmissionFormReader, [UInt8]) {
        var reader = try SubmissionFormReader(contentType: "multipart/form-data; boundary=\(boundary)")
        var archive: [UInt8] = []
        var start = 0
        while start < body.count {
            let end = min(body.count, start + size)
            try reader.consume(ByteBuffer(bytes: body[start..<end]), archive: &archive)
            start = end
        }
        try reader.finish()
        return (reader, archive)
    }

    @Test(arguments: [1, 5, 1000, 1 << 20])
    func multipartArchivesStreamTheSameWhateverTheChunking(pieces: Int) throws {
        // Bytes that look like a boundary's start inside the archive must stay archive bytes.
        let archive = Self.randomBytes(50_000, seed: 3) + Array("\r\n--KiLnB0un".utf8) + Self.randomBytes(10, seed: 4)
        let body = Self.form([
            ("nonce", nil, Array("abcd".utf8)), ("junk", nil, Self.randomBytes(30_000, seed: 5)),
            ("source", "p.zip", archive), ("source_name", nil, Array("q.zip".utf8)),
        ])
        let (reader, out) = try Self.readForm(body, pieces: pieces)
        #expect(out == archive)
        #expect(reader.fields == ["nonce": "abcd", "source_name": "q.zip"])
        #expect(reader.archiveFilename == "p.zip")
    }

    @Test func hostileFormsAreRefusedBeforeTheyGrowMemory() throws {
        let cases: [([UInt8], String)] = [
            (Self.form([("nonce", nil, Array(repeating: 0x61, count: 70_000))]), "longer than"),
            (Self.form([("source", nil, [1]), ("source", nil, [2])]), "appears more than once"),
            (Self.form([("nonce", nil, Array("ab".utf8)), ("nonce", nil, Array("cd".utf8))]), "appears more than once"),
            (Self.form((0..<70).map { ("f\($0)", nil, [0x61]) }), "more than 64 parts"),
            // One header line that never ends.
            (Array("--KiLnB0und\r\nContent-Disposition: form-data; name=\"".utf8) + Array(repeating: 0x61, count: 1 << 20), "longer than 8192 bytes"),
            // A preamble that never reaches a boundary.
            (Array(repeating: 0x61, count: 1 << 20), "in a row"),
            // A header name that is not a token (MultipartKit trapped on bytes ≥ 0x80 here).
            (Array("--KiLnB0und\r\n".utf8) + [0xBD] + Array("ontent-Disposition: form-data; name=\"nonce\"\r\n\r\nab\r\n--KiLnB0und--\r\n".utf8), "not a token"),
            (Array("--KiLnB0und\r\nno colon here\r\n\r\nx\r\n--KiLnB0und--\r\n".utf8), "has no name"),
            (Array("--KiLnB0undX\r\n".utf8), "not followed by CRLF"),
            (Array("--KiLnB0und\r\n".utf8) + (0..<40).flatMap { Array("X-H\($0): v\r\n".utf8) }, "more than 32 headers"),
            (Array(Self.form([("source", nil, [1, 2, 3])]).dropLast(20)), "ended before its closing boundary"),
        ]
        for (body, message) in cases {
            do {
                _ = try Self.readForm(body, pieces: 8192)
                Issue.record("accepted: \(message)")
            } catch {
                #expect(error.message.contains(message), "\(message): \(error.message)")
            }
        }
        #expect(throws: SubmissionError.self) { _ = try SubmissionFormReader(contentType: "multipart/form-data") }
        #expect(throws: SubmissionError.self) { _ = try SubmissionFormReader(contentType: "multipart/form-data; boundary=\(String(repeating: "b", count: 71))") }
    }

    @Test func base64DecodesLikeFoundationAtEveryLength() {
        for n in 0..<40 {
            let bytes = Self.randomBytes(n, seed: UInt64(n))
            for text in [Data(bytes).base64EncodedString(), Data(bytes).base64EncodedString().trimmingCharacters(in: CharacterSet(charactersIn: "="))] {
                var decoder = Base64StreamDecoder()
                var out: [UInt8] = []
                let ok = Array(text.utf8).withUnsafeBytes { decoder.decode($0, into: &out) } && decoder.finish(into: &out)
                #expect(ok && out == bytes, "\(n): \(text)")
            }
        }
        for bad in ["A", "AAAAA", "A===", "AA=A", "AA===", "AB*C"] {
            var decoder = Base64StreamDecoder()
            var out: [UInt8] = []
            let ok = Array(bad.utf8).withUnsafeBytes { decoder.decode($0, into: &out) } && decoder.finish(into: &out)
            #expect(!ok, "\(bad)")
        }
    }
}
