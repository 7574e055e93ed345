import KilnFuzzSupport
import KilnSubmission
import NIOCore

/// The streaming readers behind `POST /build`, on hostile bodies cut at hostile places: the first
/// byte picks JSON or multipart and the piece size, the rest is the body. Any trap is a bug, and so
/// is an archive longer than the body could encode (bytes out of nowhere).
enum FuzzSubmissionBodiesTarget {
    static func run(_ input: [UInt8]) {
        guard let control = input.first else { return }
        let body = Array(input.dropFirst())
        let piece = [1, 2, 3, 7, 64, 4096, 1 << 20][Int(control >> 1) % 7]
        var archive: [UInt8] = []
        var start = 0
        if control & 1 == 0 {
            var scanner = SubmissionJSONScanner()
            do {
                while start < body.count {
                    let end = min(body.count, start + piece)
                    try body[start..<end].withUnsafeBytes { try scanner.consume($0, archive: &archive) }
                    start = end
                }
                try scanner.finish(archive: &archive)
            } catch {}
            precondition(archive.count <= body.count * 3 / 4 + 3, "decoded more than the body holds")
        } else {
            guard var reader = try? SubmissionFormReader(contentType: "multipart/form-data; boundary=B") else { return }
            do {
                while start < body.count {
                    let end = min(body.count, start + piece)
                    try reader.consume(ByteBuffer(bytes: body[start..<end]), archive: &archive)
                    start = end
                }
                try reader.finish()
            } catch {}
            precondition(archive.count <= body.count, "a part longer than the body")
        }
    }
}

@main
enum FuzzSubmissionBodiesMain {
    static func main() { FuzzDriver.run(FuzzSubmissionBodiesTarget.run) }
}
