import Foundation
import NIOConcurrencyHelpers

/// A user-space stand-in for configfs-tsm: for each new report entry it creates the attribute files;
/// when 64 bytes land in `inblob` it writes an SEV-SNP-shaped `outblob` (version 5, ECDSA P-384,
/// VMPL 0, no debug) with those bytes at REPORT_DATA (offset 0x50) and bumps `generation`, as the
/// kernel does. Its signature is zeros: no AMD key signed it, which is what a verifier must notice.
// @unchecked Sendable: `thread` is written once in init before the thread starts and never again;
// every other mutable state is in a lock box.
public final class FakeTSM: @unchecked Sendable {
    public let root: String
    private let stopped = NIOLockedValueBox(false)
    private let generationStep: Int
    private var thread: Thread?
    public let reports = NIOLockedValueBox(0)

    public let aux: [UInt8]

    public init(root: String, generationStep: Int = 1, aux: [UInt8] = []) {
        self.root = root
        self.aux = aux
        self.generationStep = generationStep
        let t = Thread { [self] in self.loop() }
        thread = t
        t.start()
    }

    public func stop() { stopped.withLockedValue { $0 = true } }

    private func loop() {
        var seen: [String: [UInt8]] = [:]
        var initialised = Set<String>()
        let fm = FileManager.default
        while !stopped.withLockedValue({ $0 }) {
            for name in (try? fm.contentsOfDirectory(atPath: root)) ?? [] {
                let e = root + "/" + name
                if !initialised.contains(name) {
                    initialised.insert(name)
                    // The test may already be removing the directory: then there is nothing to serve.
                    let made = [
                        fm.createFile(atPath: e + "/inblob", contents: Data()),
                        fm.createFile(atPath: e + "/outblob", contents: Data()),
                        fm.createFile(atPath: e + "/provider", contents: Data("sev_guest\n".utf8)),
                        fm.createFile(atPath: e + "/auxblob", contents: Data(aux)),
                        fm.createFile(atPath: e + "/generation", contents: Data("0\n".utf8)),
                    ]
                    if made.contains(false) { continue }
                    continue
                }
                guard let inblob = fm.contents(atPath: e + "/inblob").map(Array.init), inblob.count == 64, seen[name] != inblob else { continue }
                seen[name] = inblob
                var report = [UInt8](repeating: 0, count: 1184)
                report[0] = 5
                report[0x08] = 0x00
                report[0x09] = 0x00
                report[0x0A] = 0x03  // policy 0x30000
                report[0x34] = 1
                report[0x50..<0x90] = inblob[...]
                guard fm.createFile(atPath: e + "/outblob", contents: Data(report)) else { continue }
                let g =
                    Int(
                        String(decoding: fm.contents(atPath: e + "/generation") ?? Data("0".utf8), as: UTF8.self)
                            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                guard fm.createFile(atPath: e + "/generation", contents: Data("\(g + generationStep)\n".utf8)) else { continue }
                reports.withLockedValue { $0 += 1 }
            }
            usleep(500)
        }
    }
}
