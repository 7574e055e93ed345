import Foundation
import KilnJobs
import Testing

@testable import KilnCoordination
@testable import KilnGateway

/// `IngestionOwnership`, which gateway answers for a job, without a store or a clock: each stored
/// state against this gateway ("g1"), what is remembered, and the bound.
@Suite struct IngestionOwnershipTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func job(
        _ status: Job.Status, ingestedBy: String? = nil, claimedBy: String? = nil, claimExpires: Date? = nil, id: String = "j1"
    ) -> Job {
        var j = Job(id: id, nonce: "n", request: "{}", position: 1, queuedAt: now, sourceDigest: nil)
        j.status = status
        j.ingestedBy = ingestedBy
        j.dispatchClaimedBy = claimedBy
        j.dispatchClaimExpiresAt = claimExpires
        return j
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let job: Job
        let expected: IngestionOwnership.Verdict
        let remembered: Bool
        var testDescription: String { "\(name) → \(expected)" }
    }

    static let cases: [Case] = [
        Case(name: "a waiting job nobody claims", job: job(.waiting), expected: .here, remembered: false),
        Case(
            name: "a waiting job another gateway is offering", job: job(.waiting, claimedBy: "g2", claimExpires: now.addingTimeInterval(5)),
            expected: .offeredElsewhere, remembered: false),
        Case(
            name: "a waiting job whose other claim expired", job: job(.waiting, claimedBy: "g2", claimExpires: now.addingTimeInterval(-1)),
            expected: .here, remembered: false),
        Case(name: "a waiting job another claim names without expiry", job: job(.waiting, claimedBy: "g2"), expected: .here, remembered: false),
        Case(
            name: "a waiting job this gateway is offering", job: job(.waiting, claimedBy: "g1", claimExpires: now.addingTimeInterval(5)),
            expected: .here, remembered: false),
        Case(name: "a building job this gateway ingests", job: job(.building, ingestedBy: "g1"), expected: .here, remembered: false),
        Case(name: "a building job another gateway ingests", job: job(.building, ingestedBy: "g2"), expected: .ingestedElsewhere, remembered: true),
        Case(name: "a building job nobody ingests yet", job: job(.building), expected: .here, remembered: false),
        Case(name: "a ready job another gateway ingested", job: job(.ready, ingestedBy: "g2"), expected: .ingestedElsewhere, remembered: true),
    ]

    @Test(arguments: cases)
    func eachStoredJobAgainstThisGateway(_ c: Case) {
        var ownership = IngestionOwnership(gateway: "g1")
        #expect(ownership.verdict(on: c.job, now: Self.now) == c.expected)
        #expect(ownership.isKnownForeign(c.job.id) == c.remembered)
    }

    @Test func anOfferOrAdoptionHereMakesARememberedJobThisGatewaysAgain() {
        var ownership = IngestionOwnership(gateway: "g1")
        _ = ownership.verdict(on: Self.job(.building, ingestedBy: "g2"), now: Self.now)
        #expect(ownership.isKnownForeign("j1"))
        ownership.claimed("j1")
        #expect(!ownership.isKnownForeign("j1"))
    }

    @Test func whatItRemembersIsBounded() {
        var ownership = IngestionOwnership(gateway: "g1", maxRemembered: 100)
        for i in 0..<10_000 {
            _ = ownership.verdict(on: Self.job(.building, ingestedBy: "g2", id: "j\(i)"), now: Self.now)
            #expect(ownership.foreign.count <= 100)
        }
        #expect(ownership.isKnownForeign("j9999"))
    }
}
