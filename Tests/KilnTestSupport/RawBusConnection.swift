import Foundation
import KilnBus
import NIOCore

/// A deliberately dumb blocking TCP client for black-box protocol tests: it sends whatever bytes a
/// test gives it (including malformed ones) and reads frames back with a timeout.
public final class RawBusConnection: @unchecked Sendable {
    private let fd: Int32
    private var decoder = FrameDecoder(maxFrame: Int(UInt32.max))
    private var sawEOF = false

    public init(port: Int, host: String = "127.0.0.1") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw POSIXError(.ECONNREFUSED) }
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw POSIXError(.EPIPE) }
            off += n
        }
    }

    public func send(_ frame: BusFrame) throws { try send(Array(frame.encoded.readableBytesView)) }

    public func send(_ header: BusHeader, payload: [UInt8] = []) throws {
        try send(BusFrame(header: header, payload: ByteBuffer(bytes: payload)))
    }

    /// Sends a frame whose header is the given raw text (for malformed-header tests).
    public func send(rawHeader: String, payload: [UInt8] = []) throws {
        let h = Array(rawHeader.utf8)
        var b = ByteBuffer()
        b.writeInteger(UInt32(4 + h.count + payload.count))
        b.writeInteger(UInt32(h.count))
        b.writeBytes(h)
        b.writeBytes(payload)
        try send(Array(b.readableBytesView))
    }

    /// The next frame, or nil on EOF / timeout.
    public func readFrame(timeout: Double = 5) throws -> BusFrame? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if case .frame(let f)? = try decoder.next() { return f }
            if sawEOF { return nil }
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(remaining * 1000))
            if r <= 0 { return nil }
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { sawEOF = true; continue }
            decoder.append(ByteBuffer(bytes: buf[0..<n]))
        }
    }

    /// Reads frames until one with `op` arrives (skipping pings/info), or nil.
    public func read(op: BusHeader.Op, timeout: Double = 5) throws -> BusFrame? {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            guard let f = try readFrame(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if f.header.op == op { return f }
        }
        return nil
    }

    /// True if the peer closes the connection within `timeout` (frames before that are discarded).
    public func waitForClose(timeout: Double = 5) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while deadline.timeIntervalSinceNow > 0 {
            if try readFrame(timeout: deadline.timeIntervalSinceNow) == nil { return sawEOF }
        }
        return sawEOF
    }

    /// Connect-free handshake helper: reads `info`, sends `connect` with the given fields.
    @discardableResult
    public func handshake(token: String? = nil, user: String? = nil, password: String? = nil, verbose: Bool = false) throws -> BusHeader {
        guard let info = try read(op: .info) else { throw POSIXError(.EPROTO) }
        var c = BusHeader(op: .connect)
        c.token = token
        c.user = user
        c.password = password
        c.verbose = verbose
        c.proto = 1
        try send(c)
        return info.header
    }

    /// ping → pong: everything sent before has been processed.
    public func roundTrip(timeout: Double = 5) throws -> Bool {
        try send(BusHeader(op: .ping))
        return try read(op: .pong, timeout: timeout) != nil
    }
}
