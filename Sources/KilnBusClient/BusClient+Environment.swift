import Foundation
import Logging

extension BusClient.Configuration {
    /// What every Kiln executable does with its `--broker`/`--broker-token` flags: the flag, else
    /// `KILN_BROKER_URL` / `KILN_BROKER_TOKEN`, else the local default.
    public static func fromCommandLine(url: String?, token: String?, name: String) throws -> BusClient.Configuration {
        let env = ProcessInfo.processInfo.environment
        var bus = try BusClient.Configuration(url: url ?? env["KILN_BROKER_URL"] ?? "kiln://127.0.0.1:4222")
        if let t = token ?? env["KILN_BROKER_TOKEN"] { bus.token = t }
        bus.name = name
        return bus
    }
}

/// Logs to stderr at `level` (every Kiln executable's logging set-up).
public func bootstrapKilnLogging(level: String) {
    let parsed = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = parsed
        return h
    }
}
