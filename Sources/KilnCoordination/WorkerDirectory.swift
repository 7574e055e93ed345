import Foundation
import KilnMessages

/// What the gateway knows of the farm's workers from their `kiln.workers.ready` announcements: who is
/// waiting for a build now, and what the farm's workers have offered lately. A pure value the
/// coordinator keeps, so dispatch by capability is tested without a bus.
///
/// Workers are one-shot: one that accepted a build never waits again, but its announcement still says
/// what this farm's workers can do (a pool starts the same kind again), so it is kept — as not idle —
/// until `memory` has passed.
struct WorkerDirectory: Sendable {
    struct Entry: Sendable {
        var ready: WorkerReady
        var seen: Date
        var idle: Bool
    }

    /// How long an announcement counts as "this farm has such workers".
    var memory: TimeInterval = 3600
    /// Most workers remembered (oldest forgotten first): announcements are bounded like everything else.
    var capacity = 10_000
    private(set) var entries: [String: Entry] = [:]

    /// Checks an announcement: a worker id that can be a subject token, a bounded description.
    static func isWellFormed(_ ready: WorkerReady) -> Bool {
        Subjects.isValidToken(ready.workerID) && ready.toolchains.count <= 16 && (ready.targets?.count ?? 0) <= 512
            && ready.toolchains.allSatisfy { $0.utf8.count <= 32 } && (ready.targets ?? []).allSatisfy { $0.utf8.count <= 128 }
            && (ready.isolation?.utf8.count ?? 0) <= 32
    }

    mutating func announced(_ ready: WorkerReady, at now: Date) {
        entries[ready.workerID] = Entry(ready: ready, seen: now, idle: true)
        if entries.count > capacity, let oldest = entries.min(by: { $0.value.seen < $1.value.seen })?.key { entries[oldest] = nil }
    }

    /// It accepted a build (it will not wait again).
    mutating func busy(_ workerID: String) { entries[workerID]?.idle = false }

    /// It is gone (nobody answered on its subject) or declined: not a candidate any more, but what it
    /// offered still describes the farm.
    mutating func unavailable(_ workerID: String) { entries[workerID]?.idle = false }

    mutating func expire(now: Date) {
        entries = entries.filter { now.timeIntervalSince($0.value.seen) <= memory }
    }

    /// Idle workers that can build a job with `requirements`, longest waiting first.
    func candidates(for requirements: JobRequirements, now: Date) -> [String] {
        entries.values.filter { $0.idle && now.timeIntervalSince($0.seen) <= memory && requirements.unmet(by: $0.ready).isEmpty }
            .sorted { $0.seen < $1.seen }.map(\.ready.workerID)
    }

    /// Nil while some worker seen lately could build it (it may come back, or a pool start another);
    /// otherwise why none can — but only once the farm has announced workers at all (an empty
    /// directory means the gateway just started, not that nothing can build the job).
    func impossibility(of requirements: JobRequirements, now: Date) -> String? {
        let recent = entries.values.filter { now.timeIntervalSince($0.seen) <= memory }
        guard !recent.isEmpty else { return nil }
        var reasons: [String: Int] = [:]
        for entry in recent {
            let unmet = requirements.unmet(by: entry.ready)
            if unmet.isEmpty { return nil }
            for reason in unmet { reasons[reason, default: 0] += 1 }
        }
        let common = reasons.sorted { $0.value > $1.value || $0.value == $1.value && $0.key < $1.key }.map(\.key).prefix(3)
        return "no worker on this farm can build it: the \(recent.count) seen lately lack " + common.joined(separator: "; ")
    }
}
