/// The locked packages of a Cargo.lock, for `resolvedDependencies` (`pkg:cargo/<name>@<version>` with
/// its registry checksum). A line-oriented reader: Cargo.lock is machine-written and flat.
public struct CargoLock: Sendable, Equatable {
    public struct Package: Sendable, Equatable {
        public var name: String
        public var version: String
        public var source: String?
        public var checksum: String?
    }

    public var packages: [Package]

    public init(text: String) {
        var packages: [Package] = []
        var current: Package?
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line == "[[package]]" {
                if let c = current { packages.append(c) }
                current = Package(name: "", version: "")
                continue
            }
            if line.hasPrefix("[") {
                if let c = current { packages.append(c) }
                current = nil
                continue
            }
            guard current != nil, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 else { continue }
            value = String(value.dropFirst().dropLast())
            switch key {
            case "name": current!.name = value
            case "version": current!.version = value
            case "source": current!.source = value
            case "checksum": current!.checksum = value
            default: break
            }
        }
        if let c = current { packages.append(c) }
        self.packages = packages.filter { !$0.name.isEmpty }
    }

    /// Third-party packages (those with a source), as purls with digests.
    public var dependencies: [(purl: String, sha256: String?, source: String)] {
        packages.compactMap { p in
            guard let source = p.source else { return nil }
            return ("pkg:cargo/\(p.name)@\(p.version)", p.checksum, source)
        }
    }
}
