import Foundation
import KilnMessages
import Testing

@Suite struct BuildEventTests {
    @Test func timesAreRFC3339InUTCWithMicroseconds() {
        #expect(BuildEvent.format(Date(timeIntervalSince1970: 1_795_000_000.123456)) == "2026-11-18T11:06:40.123456Z")
        #expect(BuildEvent.format(Date(timeIntervalSince1970: 946_684_800.000042)) == "2000-01-01T00:00:00.000042Z")
        // Parses back with the standard formatter (fractional seconds).
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let now = Date()
        let parsed = f.date(from: BuildEvent.format(now))
        #expect(parsed.map { abs($0.timeIntervalSince(now)) < 0.002 } == true)
    }
}
