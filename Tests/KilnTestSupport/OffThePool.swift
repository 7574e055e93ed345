import Foundation

/// Runs CPU-heavy or blocking test work (packing a 10 GiB bomb, hashing hundreds of MiB in a debug
/// build) on a thread of its own and awaits it, so it holds none of the cooperative pool's threads —
/// two such tests running at once on a 2-core machine stopped every other test (issue #27).
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try work() }) }
        thread.name = "kiln-test-off-pool"
        thread.start()
    }
}
