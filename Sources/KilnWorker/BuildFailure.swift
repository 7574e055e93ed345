/// Why a build ended in `failed`: the phase, a message for the user, whether trying again could help,
/// and what to do about it. Every failure path of the worker produces one of these.
public struct BuildFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var phase: String
    public var message: String
    public var retryable: Bool
    public var suggestedAction: String
    /// The toolchain this worker lacked for the project (`cargo`, `nix`): the gateway sends the next
    /// attempt only to a worker that has it.
    public var requires: String?

    public init(phase: String, message: String, retryable: Bool = false, suggestedAction: String, requires: String? = nil) {
        self.phase = phase
        self.message = message
        self.retryable = retryable
        self.suggestedAction = suggestedAction
        self.requires = requires
    }

    public var description: String { "\(phase): \(message)" }

    static func source(_ message: String, retryable: Bool = false, fix: String) -> BuildFailure {
        BuildFailure(phase: "source", message: message, retryable: retryable, suggestedAction: fix)
    }
    static func detect(_ message: String) -> BuildFailure {
        BuildFailure(phase: "detect", message: message, suggestedAction: "add a Cargo.toml, flake.nix or default.nix at the project root")
    }
    static func build(_ message: String, retryable: Bool = false, fix: String = "fix the build errors shown in the log and submit again") -> BuildFailure {
        BuildFailure(phase: "build", message: message, retryable: retryable, suggestedAction: fix)
    }
    /// Something the build left where an output or a build-config file should be (a link, a FIFO, a
    /// path outside the tree): the build's fault, never followed.
    static func package(_ message: String, fix: String = "make the build produce regular files inside its output directory") -> BuildFailure {
        BuildFailure(phase: "package", message: message, suggestedAction: fix)
    }
    /// The farm cannot build this (a toolchain or service of the worker is missing or down): the
    /// operator's problem, never presented as the user's, and retryable unless it is the farm's policy.
    static func farm(_ phase: String, _ message: String, operatorAction: String, retryable: Bool = true) -> BuildFailure {
        BuildFailure(
            phase: phase, message: "the farm cannot build this: " + message, retryable: retryable,
            suggestedAction: "this is the farm's problem, not your project's: \(retryable ? "retry later" : "use a farm that builds it"); operator: \(operatorAction)")
    }
    static func internalError(_ phase: String, _ message: String) -> BuildFailure {
        BuildFailure(phase: phase, message: message, retryable: true, suggestedAction: "retry; if it persists, report it to the farm operator")
    }
}

/// Thrown when a `cancel` control message stopped the build.
struct BuildCancelled: Error {}
