import Foundation

/// The two timestamp forms Kiln writes: RFC 3339 UTC with whole seconds in signed provenance (as
/// SLSA expects, and so that a re-encoding cannot change what was signed), and with milliseconds in
/// the job API, where ordering events within a second matters.
public enum Timestamp {
    /// `2026-12-02T10:39:51Z`
    public static func string(_ date: Date) -> String { date.formatted(seconds) }

    /// `2026-12-02T10:39:51.123Z`
    public static func preciseString(_ date: Date) -> String { date.formatted(precise) }

    /// Parses either form (and any RFC 3339 offset).
    public static func parse(_ text: some StringProtocol) -> Date? {
        // A formatter per call: parsing is rare (query parameters), and the formatter is not Sendable.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: String(text)) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: String(text))
    }

    static let seconds = Date.ISO8601FormatStyle(timeZone: .gmt)
    static let precise = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)
}
