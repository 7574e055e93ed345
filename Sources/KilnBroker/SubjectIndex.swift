import KilnBus

/// Subscriptions indexed by subject tokens, with a cache of match results.
///
/// A trie over tokens with a `*` child and a `>` bucket per node. Lookups first hit `cache`
/// (subject → matches); any insert or removal clears it, so the cache can never return a removed
/// subscription. Not thread-safe: `MessageRouter` owns it under its lock.
public struct SubjectIndex {
    final class Node {
        var literal: [Substring: Node] = [:]
        var star: Node?
        var subscriptions: [ObjectIdentifier: Subscription] = [:]
        var fullWildcard: [ObjectIdentifier: Subscription] = [:]
        var isEmpty: Bool { literal.isEmpty && star == nil && subscriptions.isEmpty && fullWildcard.isEmpty }
    }

    /// What a subject matched: every plain subscription gets a copy; each queue group gets one.
    public struct Match {
        public var plain: [Subscription] = []
        public var queues: [String: [Subscription]] = [:]
        public var isEmpty: Bool { plain.isEmpty && queues.isEmpty }
        public var count: Int { plain.count + queues.values.reduce(0) { $0 + $1.count } }
    }

    private var root = Node()
    private var cache: [String: Match] = [:]
    public let cacheLimit: Int
    public private(set) var count = 0

    public init(cacheLimit: Int = 4096) { self.cacheLimit = cacheLimit }

    public var cachedSubjects: Int { cache.count }

    public mutating func insert(_ subscription: Subscription) {
        var node = root
        let tokens = subscription.subject.split(separator: ".", omittingEmptySubsequences: false)
        for (i, token) in tokens.enumerated() {
            if token == ">" && i == tokens.count - 1 {
                node.fullWildcard[ObjectIdentifier(subscription)] = subscription
                count += 1
                cache.removeAll(keepingCapacity: true)
                return
            }
            if token == "*" {
                if node.star == nil { node.star = Node() }
                node = node.star!
            } else {
                if let next = node.literal[token] {
                    node = next
                } else {
                    let next = Node()
                    node.literal[token] = next
                    node = next
                }
            }
        }
        node.subscriptions[ObjectIdentifier(subscription)] = subscription
        count += 1
        cache.removeAll(keepingCapacity: true)
    }

    @discardableResult
    public mutating func remove(_ subscription: Subscription) -> Bool {
        let tokens = subscription.subject.split(separator: ".", omittingEmptySubsequences: false)
        var path: [(Node, Substring)] = []
        var node = root
        let id = ObjectIdentifier(subscription)
        var removed = false
        for (i, token) in tokens.enumerated() {
            if token == ">" && i == tokens.count - 1 {
                removed = node.fullWildcard.removeValue(forKey: id) != nil
                break
            }
            let next: Node?
            if token == "*" { next = node.star } else { next = node.literal[token] }
            guard let next else { return false }
            path.append((node, token))
            node = next
            if i == tokens.count - 1 {
                removed = node.subscriptions.removeValue(forKey: id) != nil
            }
        }
        guard removed else { return false }
        count -= 1
        cache.removeAll(keepingCapacity: true)
        // Prune empty nodes so churn (one-shot subscriptions) doesn't leave garbage behind.
        var child = node
        for (parent, token) in path.reversed() {
            guard child.isEmpty else { break }
            if token == "*" { parent.star = nil } else { parent.literal[token] = nil }
            child = parent
        }
        return true
    }

    /// All subscriptions matching a literal subject.
    public mutating func match(_ subject: String) -> Match {
        if let hit = cache[subject] { return hit }
        var result = Match()
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        collect(node: root, tokens: tokens[...], into: &result)
        if cache.count >= cacheLimit { cache.removeAll(keepingCapacity: true) }
        cache[subject] = result
        return result
    }

    private func collect(node: Node, tokens: ArraySlice<Substring>, into result: inout Match) {
        if !tokens.isEmpty {
            for sub in node.fullWildcard.values { add(sub, to: &result) }
        }
        guard let token = tokens.first else {
            for sub in node.subscriptions.values { add(sub, to: &result) }
            return
        }
        let rest = tokens.dropFirst()
        if let next = node.literal[token] { collect(node: next, tokens: rest, into: &result) }
        if let star = node.star { collect(node: star, tokens: rest, into: &result) }
    }

    private func add(_ sub: Subscription, to result: inout Match) {
        if let queue = sub.queue {
            result.queues[queue, default: []].append(sub)
        } else {
            result.plain.append(sub)
        }
    }
}
