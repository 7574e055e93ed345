import NIOConcurrencyHelpers

/// A one-way switch: cancel once, every waiter wakes.
public final class CancelSwitch: Sendable {
    private let state = NIOLockedValueBox<(fired: Bool, next: Int, waiters: [Int: CheckedContinuation<Void, Never>])>((false, 0, [:]))

    public init() {}

    public var isFired: Bool { state.withLockedValue { $0.fired } }

    public func fire() {
        let waiters = state.withLockedValue { s -> [CheckedContinuation<Void, Never>] in
            if s.fired { return [] }
            s.fired = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in waiters { w.resume() }
    }

    /// Returns when fired, or when the calling task is cancelled (check `isFired` to tell which).
    public func wait() async {
        let id = state.withLockedValue { s -> Int in
            s.next += 1
            return s.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLockedValue { s -> Bool in
                    if s.fired || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            let mine = state.withLockedValue { $0.waiters.removeValue(forKey: id) }
            mine?.resume()
        }
    }
}

/// A flag set once from any thread.
public final class Flag: Sendable {
    private let value = NIOLockedValueBox(false)
    public init() {}
    public func set() { value.withLockedValue { $0 = true } }
    public var isSet: Bool { value.withLockedValue { $0 } }
}
