import Logging

/// Every Kiln executable logs to stderr, at the level its `--log-level` names (`info` if the name is
/// not a level). One place, so that the executables cannot drift apart.
public enum KilnLogging {
    public static func bootstrap(level: String) {
        let parsed = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = parsed
            return handler
        }
    }
}
