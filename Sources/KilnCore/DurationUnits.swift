/// A `Duration` in the units APIs outside Swift's clocks take (Foundation's `TimeInterval`, SQL
/// intervals, NIO's nanoseconds); one definition for every module.
extension Duration {
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    public var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}
