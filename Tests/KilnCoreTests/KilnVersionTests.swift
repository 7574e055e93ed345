import Foundation
import KilnCore
import KilnTestSupport
import Testing

@Suite struct KilnVersionTests {
    @Test func aStampBesideTheExecutableNamesTheCommit() throws {
        let dir = try TemporaryDirectory()
        let exe = dir.file("kiln-gateway")
        try FileManager.default.writeFile(atPath: exe, contents: Data("binary".utf8))
        let unstamped = KilnVersion(executable: exe)
        #expect(unstamped.commit == nil)
        #expect(unstamped.description == KilnVersion.release + " (unstamped build)")

        let commit = String(repeating: "ab", count: 20)
        try FileManager.default.writeFile(atPath: dir.file("kiln-source.json"), contents: Data("{\"commit\":\"\(commit)\",\"dirty\":false}".utf8))
        let stamped = KilnVersion(executable: exe)
        #expect(stamped.commit == commit)
        #expect(stamped.dirty == false)
        #expect(stamped.description == KilnVersion.release + " (abababababab)")
    }

    @Test func aMalformedStampIsIgnoredNotTrusted() throws {
        let dir = try TemporaryDirectory()
        let exe = dir.file("kiln-worker")
        try FileManager.default.writeFile(atPath: exe, contents: Data("binary".utf8))
        for stamp in [#"{"commit":"HEAD"}"#, #"{"commit":"\#(String(repeating: "AB", count: 20))"}"#, "not json", #"{"dirty":false}"#] {
            try FileManager.default.writeFile(atPath: dir.file("kiln-source.json"), contents: Data(stamp.utf8))
            #expect(KilnVersion(executable: exe).commit == nil, "\(stamp)")
        }
        // Without "dirty" the tree is assumed modified.
        try FileManager.default.writeFile(atPath: dir.file("kiln-source.json"), contents: Data(#"{"commit":"\#(String(repeating: "0", count: 40))"}"#.utf8))
        #expect(KilnVersion(executable: exe).description.hasSuffix(", modified)"))
    }
}
