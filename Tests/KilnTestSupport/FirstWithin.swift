extension AsyncSequence where Self: Sendable, Element: Sendable {
    /// The sequence's next element, or nil if none arrives within `limit` (for "nothing arrives"
    /// checks and for waiting on one message without hanging a test).
    public func first(within limit: Duration) async -> Element? {
        await withTaskGroup(of: Element?.self) { group in
            group.addTask {
                var iterator = self.makeAsyncIterator()
                // An error ends the wait like the end of the sequence does.
                return try? await iterator.next()
            }
            group.addTask {
                try? await Task.sleep(for: limit)  // the deadline: a cancelled sleep ends the race too
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}
