import Foundation

/// `GET /farm`: what the dashboard shows above the builds list.
package struct FarmSummary: Codable, Sendable, Equatable {
    var waiting: Int
    var building: Int
    /// Workers that announced themselves and have not taken a build since (within the directory's memory).
    var workersIdle: Int
    /// Workers seen lately that have taken a build or gone away.
    var workersBusy: Int

    enum CodingKeys: String, CodingKey {
        case waiting, building
        case workersIdle = "workers_idle"
        case workersBusy = "workers_busy"
    }
}

extension BuildCoordinator {
    package func farmSummary(now: Date = Date()) async throws -> FarmSummary {
        let counts = try await store.countByStatus()
        let recent = workers.entries.values.filter { now.timeIntervalSince($0.seen) <= workers.memory }
        let idle = recent.filter(\.idle).count
        return FarmSummary(
            waiting: counts[.waiting] ?? 0, building: counts[.building] ?? 0, workersIdle: idle,
            workersBusy: min(recent.count - idle, counts[.building] ?? 0))
    }
}
