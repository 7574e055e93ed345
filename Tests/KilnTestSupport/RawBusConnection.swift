import Foundation
import KilnBus
import NIOCore

/// A deliberately dumb TCP client (awaiting, never blocking a thread) for black-box protocol tests: it sends whatever bytes a
/// test gives it (including malformed ones) and reads frames back with a timeout.
public final class RawBusConnection: @unchecked Sendable {
    private let socket: RawSocket
    private var decoder = FrameDecoder(maxFrame: Int(UInt32.max))
    private var sawEOF = false

    public init(port: Int, host: String = "127.0.0.1", receiveBuffer: Int? = nil) throws {
        socket = try RawSocket(port: port, host: host, receiveBuffer: receiveBuffer)
    }

    public func send(_ bytes: [UInt8]) async throws { try await socket.send(bytes) }

    public func close() { socket.shutdown() }

    public func send(_ frame: BusFrame) async throws { try await send(Array(frame.encoded.readableBytesView)) }

    public func send(_ header: BusHeader, payload: [UInt8] = []) async throws {
        try await send(BusFrame(header: header, payload: ByteBuffer(bytes: payload)))
    }

    /// Sends a frame whose header is the given raw text (for malformed-header tests).
    public func send(rawHeader: String, payload: [UInt8] = []) async throws {
        let h = Array(rawHeader.utf8)
        var b = ByteBuffer()
        b.writeInteger(UInt32(4 + h.count + payload.count))
        b.writeInteger(UInt32(h.count))
        b.writeBytes(h)
        b.writeBytes(payload)
        try await send(Array(b.readableBytesView))
    }

    /// The next frame, or nil on EOF / timeout.
    public func readFrame(timeout: Double = 30) async throws -> BusFrame? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if case .frame(let f)? = try decoder.next() { return f }
            if sawEOF { return nil }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return nil }
            switch await socket.readSome(timeout: remaining) {
            case .timeout: return nil
            case .eof: sawEOF = true
            case .bytes(let bytes): decoder.append(ByteBuffer(bytes: bytes))
            }
        }
    }

    /// Reads frames until one with `op` arrives (skipping pings/info), or nil.
    public func read(op: BusHeader.Op, timeout: Double = 30) async throws -> BusFrame? {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let f = try await readFrame(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if f.header.op == op { return f }
        }
        return nil
    }

    /// True if the peer closes the connection within `timeout` (frames before that are discarded).
    public func waitForClose(timeout: Double = 30) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            if try await readFrame(timeout: deadline.timeIntervalSinceNow) == nil { return sawEOF }
        }
        return sawEOF
    }

    /// Connect-free handshake helper: reads `info`, sends `connect` with the given fields.
    @discardableResult
    public func handshake(token: String? = nil, user: String? = nil, password: String? = nil, verbose: Bool = false) async throws -> BusHeader {
        guard let info = try await read(op: .info) else { throw POSIXError(.EPROTO) }
        var c = BusHeader(op: .connect)
        c.token = token
        c.user = user
        c.password = password
        c.verbose = verbose
        c.proto = 1
        try await send(c)
        return info.header
    }

    /// ping → pong: everything sent before has been processed.
    public func roundTrip(timeout: Double = 30) async throws -> Bool {
        try await send(BusHeader(op: .ping))
        return try await read(op: .pong, timeout: timeout) != nil
    }
}
