import Testing

@testable import KilnFetch

struct SourceHostPolicyTests {
    /// With only-allowed hosts, any other host is refused before a DNS lookup (a test farm, or one
    /// that builds only from its own mirror, never reaches out).
    @Test func onlyAllowedHostsRefusesEveryOtherHostWithoutResolvingIt() throws {
        let policy = SourceHostPolicy(allowed: ["127.0.0.1", "mirror.internal:8443"], onlyAllowed: true)
        #expect(try policy.check(url: "http://127.0.0.1:9/x.git").pin == nil)
        #expect(try policy.check(url: "https://mirror.internal:8443/x.git").host == "mirror.internal")
        for url in ["https://example.com/x.git", "https://mirror.internal/x.git", "git://10.0.0.1/x.git"] {
            do {
                _ = try policy.check(url: url)
                Issue.record("\(url) was allowed")
            } catch {
                #expect(error.description.contains("not one this farm builds from"), "\(url): \(error)")
            }
        }
    }
}
