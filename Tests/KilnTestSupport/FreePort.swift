import Foundation
import Synchronization

/// Picks a free TCP port on 127.0.0.1 for programs that need a port number up front (prefer letting the
/// program bind port 0 itself where it can).
///
/// The port comes from below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999 here):
/// a port merely bound and released inside that range is handed out again to the next `bind(0)` or
/// outgoing `connect` of any test running meanwhile, and a script that starts its servers seconds
/// later found its port taken ("Address already in use", `ScaleOutScriptTests` under the full suite).
/// Below the range only an explicit bind takes a port; each is handed out once per test process.
public enum FreePort {
    static let range = 20000..<32000
    static let handedOut = Mutex<Set<Int>>([])

    public static func pick() throws -> Int {
        for _ in 0..<500 {
            let port = Int.random(in: range)
            guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
            if isFree(port) { return port }
        }
        throw POSIXError(.EADDRINUSE)
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let len = socklen_t(MemoryLayout<sockaddr_in>.size)
        return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 } }
    }
}
