import KilnBus
import Testing

@Suite struct SubjectTests {
    @Test(arguments: ["a", "a.b.c", "kiln.build.123.events", "_INBOX.x1.2", "a-b.c_d"])
    func validPublish(_ s: String) { #expect(Subject.isValid(s, allowWildcards: false)) }

    @Test(arguments: ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "tab\there", "é"])
    func invalidPublish(_ s: String) { #expect(!Subject.isValid(s, allowWildcards: false)) }

    @Test(arguments: ["a.*", "a.>", ">", "*", "*.b.>", "a.*.c"])
    func validSubscription(_ s: String) { #expect(Subject.isValid(s, allowWildcards: true)) }

    @Test(arguments: ["a.>.b", "a*", "a.b*", ">a", "a.**", "a..>"])
    func invalidSubscription(_ s: String) { #expect(!Subject.isValid(s, allowWildcards: true)) }

    @Test func matching() {
        #expect(Subject.matches("a.b.c", pattern: "a.*.c"))
        #expect(Subject.matches("a.b.c", pattern: "a.>"))
        #expect(Subject.matches("a.b", pattern: ">"))
        #expect(!Subject.matches("a", pattern: "a.>"))
        #expect(!Subject.matches("a.b.c", pattern: "a.*"))
        #expect(!Subject.matches("a.b", pattern: "a.b.c"))
        #expect(Subject.matches("a.b", pattern: "a.b"))
    }

    @Test func coverage() {
        #expect(Subject.covers("a.>", "a.*.c"))
        #expect(Subject.covers(">", "a.>"))
        #expect(Subject.covers("a.*", "a.*"))
        #expect(!Subject.covers("a.*", "a.>"))
        #expect(!Subject.covers("a.b", "a.*"))
        #expect(Subject.overlaps("secret.*", "secret.x"))
        #expect(!Subject.overlaps("secret.*", "public.x"))
    }
}
