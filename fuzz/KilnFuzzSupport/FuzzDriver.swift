import CKilnFuzz
import Foundation

/// Each fuzz target is one executable, built two ways:
/// - `make fuzz` (scripts/fuzz.sh) compiles everything with ASan and libFuzzer's coverage
///   instrumentation and links libFuzzer's driver: `run` hands over to it (corpus directories,
///   `-max_total_time=N`, …);
/// - an ordinary build replays the inputs named on the command line (files, or directories of files)
///   through the same body, so every corpus entry is a regression test in `make test`.
public enum FuzzDriver {
    public typealias Body = @Sendable ([UInt8]) -> Void

    // Set once in `run`, before libFuzzer (one thread) starts calling back; never written again.
    nonisolated(unsafe) static var body: Body = { _ in }

    public static func run(_ body: @escaping Body) -> Never {
        if kiln_fuzz_available() != 0 {
            Self.body = body
            var argc = CommandLine.argc
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
            exit(
                kiln_fuzz_run(&argc, &argv) { data, size in
                    FuzzDriver.body(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
                    return 0
                })
        }
        exit(replay(body))
    }

    static func replay(_ body: ([UInt8]) -> Void) -> Int32 {
        var count = 0
        for path in CommandLine.arguments.dropFirst() where !path.hasPrefix("-") {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                FileHandle.standardError.write(Data("no such input: \(path)\n".utf8))
                return 2
            }
            let files = isDir.boolValue ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                body(Array(data))
                count += 1
            }
        }
        print("replayed \(count) inputs (corpus replay; `make fuzz` builds the libFuzzer version)")
        return 0
    }
}
