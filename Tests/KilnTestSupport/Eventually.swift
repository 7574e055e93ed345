/// Polls `condition` until it holds or `limit` passes, and says whether it held. The one way tests
/// wait for something another process or task does: no fixed sleeps before an assertion, and a
/// deadline that fails the test instead of hanging it.
@discardableResult
public func eventually(
    within limit: Duration = .seconds(60), every interval: Duration = .milliseconds(20),
    _ condition: () async throws -> Bool
) async rethrows -> Bool {
    StallWatchdog.start()
    let deadline = ContinuousClock.now + limit
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try? await Task.sleep(for: interval)
    }
}

/// Polls `produce` until it returns a value or `limit` passes (then nil).
public func eventually<T>(
    within limit: Duration = .seconds(60), every interval: Duration = .milliseconds(20),
    _ produce: () async throws -> T?
) async rethrows -> T? {
    let deadline = ContinuousClock.now + limit
    while true {
        if let value = try await produce() { return value }
        if ContinuousClock.now >= deadline { return nil }
        try? await Task.sleep(for: interval)
    }
}
