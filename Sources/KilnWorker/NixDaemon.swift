import Foundation

/// Whether this worker can build Nix projects right now: `nix` installed and its daemon answering on
/// its socket. Asked at start-up (so a worker does not advertise Nix it cannot use) and again when a
/// Nix project is detected (a daemon can stop), so a missing daemon is reported as the farm's
/// problem instead of as a failed build.
public enum NixDaemon {
    public static let defaultSocket = "/nix/var/nix/daemon-socket/socket"
    static let nix = "/usr/bin/nix"

    /// `NIX_REMOTE` for a client of the daemon at `socket` (the sandboxed build, the fetch phase).
    static func remote(socket: String) -> String { socket == defaultSocket ? "daemon" : "unix://" + socket }

    /// Nil when Nix builds can run; otherwise what is wrong, for the operator.
    static func unavailability(socket: String) -> (problem: String, operatorAction: String)? {
        guard FileManager.default.isExecutableFile(atPath: nix) else {
            return ("Nix is not installed on this worker (no \(nix))", "install Nix (Debian: nix-bin) or run workers with --no-nix")
        }
        guard answers(socket: socket) else {
            return ("the nix-daemon does not answer at \(socket)", "start the nix-daemon (e.g. systemctl start nix-daemon) and check the socket's permissions")
        }
        return nil
    }

    /// A connection to the daemon's Unix socket succeeds.
    static func answers(socket path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }
}
