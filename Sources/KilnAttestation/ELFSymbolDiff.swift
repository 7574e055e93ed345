/// Where two builds of an ELF binary differ, by symbol and so by crate: "`.rodata` differs" says
/// little, "`unicode_linebreak::tables::PAIR_TABLE` differs" names the dependency whose build is not
/// reproducible (#28: ripgrep's occasional non-identical `rg` was `unicode-linebreak` 0.1.4, whose build
/// script lays out a table through a randomly seeded hash map).
///
/// Reads `.symtab` (or `.dynsym` when stripped) from untrusted bytes: every index, offset and size is
/// range-checked, at most `maxSymbols` are read, and a symbol's bytes are compared only where both files
/// hold them. Symbols are matched by name without Rust's legacy hash suffix (`17h<16 hex>E`), which can
/// change when a crate's metadata does.
public enum ELFSymbolDiff {
    public static let maxSymbols = 1_000_000
    /// At most this many differing symbols are named (the crates are counted over all of them).
    public static let maxNamed = 20

    public struct Result: Sendable, Equatable {
        /// Differing symbols (demangled crate paths where Rust's legacy mangling allows), at most `maxNamed`.
        public var symbols: [String]
        /// Crates owning differing symbols: the likely causes first (`causeCrates`), then the rest,
        /// most differing symbols first.
        public var crates: [String]
        /// The first differing symbol in file order (the first differing byte itself is often in a
        /// header or the build id, which no symbol holds).
        public var firstDifferenceSymbol: String?
        /// Symbols of a different size in the two files, at most `maxNamed`.
        public var resizedSymbols: [String]
        /// Where the difference likely starts: the crate of the first differing symbol, then the
        /// crates of resized symbols. One table laid out differently moves everything after it, and
        /// then most of the binary differs (ripgrep: one unicode-linebreak table, 37 crates differing
        /// by the addresses they hold); everything before the first difference is identical, and a
        /// symbol that changed size changed itself.
        public var causeCrates: [String]
    }

    struct Symbol {
        var name: String
        var offset: Int
        var size: Int
    }

    /// The sized, file-backed symbols of `bytes` by matching key.
    static func symbols(_ bytes: [UInt8], _ table: ELFSectionTable) -> [String: Symbol]? {
        // ELF section index i is `table.sections[i - 1]` (index 0 is the null section).
        guard let symtabIndex = table.sections.firstIndex(where: { $0.type == 2 }) ?? table.sections.firstIndex(where: { $0.type == 11 }) else { return nil }
        let symtab = table.sections[symtabIndex]
        let stringsIndex = symtab.link - 1
        guard table.sections.indices.contains(stringsIndex) else { return nil }
        let strings = table.sections[stringsIndex]
        let entry = table.is64 ? 24 : 16
        guard symtab.entrySize >= entry, symtab.hasFileBytes else { return nil }
        let little = table.littleEndian
        func read(_ offset: Int, _ width: Int) -> Int? {
            guard offset >= 0, offset <= bytes.count - width else { return nil }
            var value: UInt64 = 0
            for i in 0..<width { value = value << 8 | UInt64(bytes[offset + (little ? width - 1 - i : i)]) }
            return value > UInt64(Int.max) ? nil : Int(value)
        }
        func name(_ offset: Int) -> String? {
            guard offset < strings.size else { return nil }
            var end = strings.offset + offset
            let limit = strings.offset + strings.size
            while end < limit, bytes[end] != 0, end - strings.offset - offset < 4096 { end += 1 }
            return String(decoding: bytes[(strings.offset + offset)..<end], as: UTF8.self)
        }
        var out: [String: Symbol] = [:]
        let count = min(symtab.size / symtab.entrySize, maxSymbols)
        for i in 0..<count {
            let e = symtab.offset + i * symtab.entrySize
            let nameOffset: Int?
            let value: Int?
            let size: Int?
            let sectionIndex: Int?
            if table.is64 {
                (nameOffset, sectionIndex, value, size) = (read(e, 4), read(e + 6, 2), read(e + 8, 8), read(e + 16, 8))
            } else {
                (nameOffset, value, size, sectionIndex) = (read(e, 4), read(e + 4, 4), read(e + 8, 4), read(e + 14, 2))
            }
            guard let nameOffset, let value, let size, let sectionIndex, size > 0, sectionIndex > 0, sectionIndex < 0xFF00,
                table.sections.indices.contains(sectionIndex - 1), let symbolName = name(nameOffset), !symbolName.isEmpty
            else { continue }
            let section = table.sections[sectionIndex - 1]
            guard section.hasFileBytes, value >= section.address, value - section.address < section.size else { continue }
            let offset = section.offset + (value - section.address)
            out[key(symbolName)] = Symbol(name: symbolName, offset: offset, size: min(size, section.offset + section.size - offset))
        }
        return out
    }

    /// A symbol's name without Rust's legacy hash suffix.
    static func key(_ name: String) -> String {
        // _ZN…17h0123456789abcdefE
        guard name.hasPrefix("_ZN"), name.hasSuffix("E"), name.utf8.count > 20 else { return name }
        let tail = name.utf8.suffix(20)
        guard tail.starts(with: "17h".utf8) else { return name }
        return String(name.dropLast(20)) + "E"
    }

    /// The crate path of a legacy-mangled Rust symbol (`_ZN17unicode_linebreak6tables…` →
    /// `unicode_linebreak::tables::…`), or the name as it is.
    public static func readable(_ name: String) -> String {
        guard name.hasPrefix("_ZN") else { return name }
        var parts: [String] = []
        var rest = Substring(name.dropFirst(3))
        while let first = rest.first, first.isNumber {
            let digits = rest.prefix { $0.isNumber }
            guard let length = Int(digits), length > 0, length <= rest.count - digits.count else { break }
            let start = rest.index(rest.startIndex, offsetBy: digits.count)
            let end = rest.index(start, offsetBy: length)
            parts.append(String(rest[start..<end]))
            rest = rest[end...]
        }
        if let last = parts.last, last.hasPrefix("h"), last.count == 17 { parts.removeLast() }
        return parts.isEmpty ? name : parts.joined(separator: "::")
    }

    /// The crate a (readable) Rust path belongs to: its first segment; for `<impl … as …>` paths, the
    /// first segment inside the angle brackets.
    public static func crate(of path: String) -> String? {
        var first = path.split(separator: ":").first.map(String.init) ?? ""
        if first.hasPrefix("_$LT$") {
            first = String(first.dropFirst(5))
            first = first.components(separatedBy: "..").first ?? first
            first = first.components(separatedBy: "$").first ?? first
        }
        guard !first.isEmpty, first.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }), path != first || path.contains("::") else { return nil }
        return first
    }

    /// The differing symbols and crates of two ELF files (nil when either is not ELF or has no symbols).
    public static func compare(original a: [UInt8], rebuilt b: [UInt8]) -> Result? {
        guard let ta = ELFSectionTable(a), let tb = ELFSectionTable(b), let sa = symbols(a, ta), let sb = symbols(b, tb) else { return nil }
        var differing: [String] = []
        var first: String?
        var resized: [String] = []
        var causes: [String] = []
        var crates: [String: Int] = [:]
        for (key, x) in sa.sorted(by: { $0.value.offset < $1.value.offset }) {
            guard let y = sb[key] else { continue }
            if x.size == y.size, a[x.offset..<(x.offset + x.size)] == b[y.offset..<(y.offset + y.size)] { continue }
            let path = readable(x.name)
            let owner = crate(of: path)
            if first == nil {
                first = path
                if let owner { causes.append(owner) }
            }
            if x.size != y.size {
                if resized.count < maxNamed { resized.append(path) }
                if let owner, !causes.contains(owner), causes.count < maxNamed { causes.append(owner) }
            }
            if differing.count < maxNamed { differing.append(path) }
            if let owner { crates[owner, default: 0] += 1 }
        }
        let rest = crates.filter { !causes.contains($0.key) }.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map(\.key)
        return Result(symbols: differing, crates: causes + rest, firstDifferenceSymbol: first, resizedSymbols: resized, causeCrates: causes)
    }
}
