import CKilnSystem
import Foundation
import NIOConcurrencyHelpers

/// Reads the parent's end of a pipe on a thread of its own, line by line, until every writer has closed
/// it. A plain blocking `read(2)`: no dispatch source (tearing one down races the descriptor's close in
/// libdispatch, swift-corelibs-libdispatch#949) and no cooperative thread.
public final class PipeReader: Sendable {
    private struct State {
        var ended = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Takes ownership of `descriptor` (closed at end of stream).
    public init(descriptor: Int32, name: String, maxLineBytes: Int = 1 << 20, onLine: @escaping @Sendable (String) -> Void) {
        let state = self.state
        let thread = Thread {
            var splitter = LineSplitter(maxLineBytes: maxLineBytes)
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                buffer.withUnsafeBytes { splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n]), emit: onLine) }
            }
            splitter.finish(emit: onLine)
            close(descriptor)
            let waiters = state.withLockedValue { s in
                s.ended = true
                defer { s.waiters = [] }
                return s.waiters
            }
            for w in waiters { w.resume() }
        }
        thread.name = name
        thread.start()
    }

    public var ended: Bool { state.withLockedValue { $0.ended } }

    /// Returns once the stream has ended.
    public func waitForEnd() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let done = state.withLockedValue { s -> Bool in
                if s.ended { return true }
                s.waiters.append(c)
                return false
            }
            if done { c.resume() }
        }
    }

    /// A pipe whose ends are both close-on-exec (the child gets its end through `kiln_spawn`'s dup2).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard kiln_pipe_cloexec(&fds) == 0 else { throw ChildProcess.SpawnError(executable: "pipe2", errno: errno) }
        return (fds[0], fds[1])
    }
}
