/// What to build, within reason (`build_options` in `POST /build`): Cargo features, package, binary,
/// target triple and profile; the Nix attribute. Validated strictly (they reach a command line),
/// signed into provenance, and part of what a rebuild reproduces.
public struct BuildOptions: Codable, Sendable, Equatable {
    public var features: [String]?
    public var noDefaultFeatures: Bool?
    public var package: String?
    public var bin: String?
    public var target: String?
    public var profile: String?
    /// Nix: the attribute (`nix-build -A`, or the flake's package) to build.
    public var attribute: String?

    public init(
        features: [String]? = nil, noDefaultFeatures: Bool? = nil, package: String? = nil, bin: String? = nil, target: String? = nil,
        profile: String? = nil, attribute: String? = nil
    ) {
        self.features = features
        self.noDefaultFeatures = noDefaultFeatures
        self.package = package
        self.bin = bin
        self.target = target
        self.profile = profile
        self.attribute = attribute
    }

    enum CodingKeys: String, CodingKey {
        case features, package, bin, target, profile, attribute
        case noDefaultFeatures = "no_default_features"
    }

    /// Nil when every option is well formed; otherwise what is wrong.
    public func violation() -> String? {
        func token(_ s: String, extra: Set<UInt8>) -> Bool {
            !s.isEmpty && s.utf8.count <= 128 && s.utf8.first != UInt8(ascii: "-")
                && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 95 || $0 == 45 || extra.contains($0) }
        }
        let slash = UInt8(ascii: "/")
        let dot = UInt8(ascii: ".")
        let plus = UInt8(ascii: "+")
        if let features {
            if features.count > 64 { return "build_options.features has more than 64 entries" }
            if let bad = features.first(where: { !token($0, extra: [slash, plus, dot]) }) { return "build_options.features has an invalid feature '\(bad)'" }
        }
        for (name, value, extra) in [
            ("package", package, Set<UInt8>()), ("bin", bin, []), ("profile", profile, []), ("target", target, [dot]), ("attribute", attribute, [dot]),
        ] {
            if let value, !token(value, extra: extra) { return "build_options.\(name) '\(value)' is not a valid name" }
        }
        return nil
    }

    public var isEmpty: Bool { self == BuildOptions() }
}
