import Foundation

/// A TCP socket for tests that speak raw bytes, with timeouts. Connecting to loopback is immediate;
/// sending and reading never block a thread (they await), so a test waiting minutes for a stream
/// holds none of the cooperative pool's threads (issue #27: two such waits stalled the whole suite).
public final class RawSocket: @unchecked Sendable {
    let fd: Int32

    /// `receiveBuffer` shrinks the kernel's receive buffer (set before connecting), so a test can make
    /// a peer that stops reading look slow quickly.
    public init(port: Int, host: String = "127.0.0.1", receiveBuffer: Int? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        if var size = receiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr(host)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
    }

    deinit { close(fd) }

    /// Ends the connection both ways now (the descriptor itself is closed on deinit).
    public func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Sends all of `bytes`. Never blocks a thread: a full socket buffer is waited out with
    /// `Task.sleep` (a test on the cooperative pool must not hold one of its few threads, issue #27).
    public func send(_ bytes: [UInt8], timeout: Duration = .seconds(60)) async throws {
        var off = 0
        let deadline = ContinuousClock.now + timeout
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                guard ContinuousClock.now < deadline else { throw POSIXError(.ETIMEDOUT) }
                try await Task.sleep(for: .milliseconds(2))
                continue
            }
            if n <= 0 { throw POSIXError(.EPIPE) }
            off += n
        }
    }

    public enum ReadResult {
        case bytes([UInt8])
        case timeout, eof
    }

    /// Waits until the socket is readable (or has ended) or `deadline` passes, without blocking a
    /// thread: a zero-timeout poll between short sleeps. Returns whether it is readable.
    private func readable(by deadline: ContinuousClock.Instant) async -> Bool {
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, 0)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR { return true }  // recv reports the error
            if ContinuousClock.now >= deadline || Task.isCancelled { return false }
            // Cancellation ends the wait above; the sleep's own CancellationError carries nothing more.
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    /// One read of whatever is available within `timeout`.
    /// A signal arriving (SIGCHLD from the test's child processes) is retried, never taken for the end.
    public func readSome(timeout: Double) async -> ReadResult {
        await readSome(until: ContinuousClock.now + .milliseconds(Int(max(0, timeout) * 1000)))
    }

    /// One read of whatever is available before `deadline`.
    public func readSome(until deadline: ContinuousClock.Instant) async -> ReadResult {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            guard await readable(by: deadline) else { return .timeout }
            let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            return n <= 0 ? .eof : .bytes(Array(buf[0..<n]))
        }
    }

    /// Reads until EOF or timeout.
    public func readAll(timeout: Double) async throws -> [UInt8] {
        var out: [UInt8] = []
        let deadline = ContinuousClock.now + .milliseconds(Int(max(0, timeout) * 1000))
        while true {
            switch await readSome(until: deadline) {
            case .bytes(let b): out += b
            case .eof, .timeout: return out
            }
            if ContinuousClock.now >= deadline { return out }
        }
    }
}
