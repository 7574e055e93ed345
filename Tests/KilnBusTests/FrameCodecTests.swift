import KilnBus
import NIOCore
import Testing

@Suite struct FrameCodecTests {
    static let sample: [BusFrame] = [
        BusFrame(header: .pub("a.b"), payload: ByteBuffer(string: "hi")),
        BusFrame(header: .sub("kiln.>", sid: "s\"1\\", queue: "workers", max: 1)),
        BusFrame(header: .pub("x.y", reply: "_INBOX.abc.1", headers: ["status": "503", "k\nv": "é✓"]), payload: ByteBuffer(bytes: [0, 1, 2, 255])),
        BusFrame(header: BusHeader(op: .ping)),
        BusFrame(header: BusError.slowConsumer(pending: 10, cap: 5).header),
    ]

    func encoded(_ frames: [BusFrame]) -> [UInt8] {
        var b = ByteBuffer()
        for f in frames { f.write(to: &b) }
        return Array(b.readableBytesView)
    }

    func decodeAll(_ decoder: inout FrameDecoder) throws -> [BusFrame] {
        var out: [BusFrame] = []
        while let d = try decoder.next() {
            guard case .frame(let f) = d else {
                Issue.record("unexpected invalid frame")
                continue
            }
            out.append(f)
        }
        return out
    }

    @Test func designExampleBytes() {
        let f = BusFrame(header: .pub("a.b"), payload: ByteBuffer(string: "hi"))
        let bytes = Array(f.encoded.readableBytesView)
        #expect(Array(bytes[0..<8]) == [0, 0, 0, 0x22, 0, 0, 0, 0x1c])
        #expect(String(decoding: bytes[8..<36], as: UTF8.self) == #"{"op":"pub","subject":"a.b"}"#)
        #expect(Array(bytes[36...]) == [0x68, 0x69])
    }

    @Test func roundTrip() throws {
        var decoder = FrameDecoder()
        decoder.append(ByteBuffer(bytes: encoded(Self.sample)))
        let frames = try decodeAll(&decoder)
        #expect(frames.count == Self.sample.count)
        for (a, b) in zip(frames, Self.sample) {
            #expect(a.header == b.header)
            #expect(a.payload == b.payload)
        }
        #expect(decoder.bufferedBytes == 0)
    }

    @Test func oneByteAtATime() throws {
        var decoder = FrameDecoder()
        var frames: [BusFrame] = []
        for byte in encoded(Self.sample) {
            decoder.append(ByteBuffer(bytes: [byte]))
            frames += try decodeAll(&decoder)
        }
        #expect(frames.map(\.header) == Self.sample.map(\.header))
    }

    @Test func splitAtEveryOffset() throws {
        let bytes = encoded(Self.sample)
        for cut in 0...bytes.count {
            var decoder = FrameDecoder()
            decoder.append(ByteBuffer(bytes: bytes[0..<cut]))
            var frames = try decodeAll(&decoder)
            decoder.append(ByteBuffer(bytes: bytes[cut...]))
            frames += try decodeAll(&decoder)
            #expect(frames.map(\.header) == Self.sample.map(\.header), "cut at \(cut)")
            #expect(frames.map(\.payload) == Self.sample.map(\.payload), "cut at \(cut)")
        }
    }

    @Test func oversizedLengthIsFatal() {
        var decoder = FrameDecoder(maxFrame: 1024)
        decoder.append(ByteBuffer(bytes: [0x7f, 0xff, 0xff, 0xff]))
        #expect(throws: BusError.frameTooLarge(0x7fff_ffff, max: 1024)) { try decoder.next() }
    }

    @Test func headerLongerThanFrameIsFatal() {
        var decoder = FrameDecoder()
        decoder.append(ByteBuffer(bytes: [0, 0, 0, 6, 0, 0, 0, 9, 0x7b, 0x7d]))
        do {
            _ = try decoder.next()
            Issue.record("expected an error")
        } catch {
            #expect(error.isFatal)
            #expect(error.message.contains("header length 9 exceeds"))
        }
    }

    @Test(arguments: [
        ("not json", "header is not a JSON object"),
        ("[1,2]", "header is not a JSON object"),
        ("", "header is empty"),
        ("{\"subject\":\"a\"}", "header has no 'op' field"),
        ("{\"op\":\"frobnicate\"}", "unknown op 'frobnicate'"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":7}", "field 'sid' must be a string"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":\"1\",\"max\":\"1\"}", "field 'max' must be an integer"),
        ("{\"op\":\"sub\",\"subject\":\"a\",\"sid\":\"1\",\"max\":1.5}", "field 'max' must be an integer"),
        ("{\"op\":\"pub\",\"subject\":\"a\",\"headers\":{\"a\":1}}", "must be an object of string values"),
        ("{\"op\":\"pub\",\"subject\":\"a\",\"headers\":[]}", "must be an object of string values"),
        ("{\"op\":\"pub\"", "ends inside the object"),
        ("{\"op\":\"pub\"} x", "trailing bytes"),
    ])
    func invalidHeaders(raw: String, expected: String) throws {
        let h = Array(raw.utf8)
        var b = ByteBuffer()
        b.writeInteger(UInt32(4 + h.count))
        b.writeInteger(UInt32(h.count))
        b.writeBytes(h)
        var decoder = FrameDecoder()
        decoder.append(b)
        guard case .invalid(let error)? = try decoder.next() else {
            Issue.record("expected .invalid for \(raw)")
            return
        }
        #expect(error.code == 400)
        #expect(!error.isFatal)
        #expect(error.message.contains(expected), "\(error.message)")
    }

    @Test func unknownFieldsAreIgnored() throws {
        let raw = #"{"x":{"deep":[1,{"a":null}],"b":true},"op":"pub","subject":"a.b","future":-1.5e3}"#
        let header = try Array(raw.utf8).withUnsafeBytes { try BusHeader.parse($0) }
        #expect(header.op == .pub)
        #expect(header.subject == "a.b")
    }

    @Test func escapesRoundTrip() throws {
        var h = BusHeader(op: .err)
        h.message = "quote \" backslash \\ newline \n tab \t ctrl \u{01} unicode ✓ 😀"
        let text = h.jsonText
        let back = try Array(text.utf8).withUnsafeBytes { try BusHeader.parse($0) }
        #expect(back == h)
        let esc = try Array(#"{"op":"err","message":"\u00e9\ud83d\ude00\/"}"#.utf8).withUnsafeBytes { try BusHeader.parse($0) }
        #expect(esc.message == "é😀/")
    }
}
