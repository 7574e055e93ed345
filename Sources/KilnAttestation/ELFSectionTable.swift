import Crypto
import KilnCore

/// The named sections of an ELF file (32- or 64-bit, either byte order), read from untrusted bytes:
/// every offset and count is range-checked against the file before use, so a truncated or hostile
/// header gives nil, never a crash. Used to say *where* two builds of a binary differ.
public struct ELFSectionTable: Sendable, Equatable {
    public struct Section: Sendable, Equatable {
        public var name: String
        public var offset: Int
        public var size: Int
        /// SHT_NOBITS (.bss): occupies no bytes in the file.
        public var hasFileBytes: Bool
        /// sh_type (2: SHT_SYMTAB), sh_addr, sh_link (a symbol table's string table), sh_entsize.
        public var type: Int = 0
        public var address: Int = 0
        public var link: Int = 0
        public var entrySize: Int = 0
    }

    public var sections: [Section]
    /// The file's class and byte order, for readers of its other tables.
    public var is64 = true
    public var littleEndian = true

    /// At most this many section headers are read (real binaries have a few dozen).
    public static let maxSections = 4096

    public init?(_ bytes: [UInt8]) {
        guard bytes.count >= 52, bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else { return nil }
        let is64: Bool
        switch bytes[4] {
        case 1: is64 = false
        case 2: is64 = true
        default: return nil
        }
        let little: Bool
        switch bytes[5] {
        case 1: little = true
        case 2: little = false
        default: return nil
        }
        func read(_ offset: Int, _ width: Int) -> Int? {
            guard offset >= 0, width <= 8, offset <= bytes.count - width else { return nil }
            var value: UInt64 = 0
            for i in 0..<width {
                let byte = UInt64(bytes[offset + (little ? width - 1 - i : i)])
                value = value << 8 | byte
            }
            return value > UInt64(Int.max) ? nil : Int(value)
        }
        let word = is64 ? 8 : 4
        guard bytes.count >= (is64 ? 64 : 52),
            let shoff = read(is64 ? 0x28 : 0x20, word),
            let shentsize = read(is64 ? 0x3A : 0x2E, 2),
            let shnum = read(is64 ? 0x3C : 0x30, 2),
            let shstrndx = read(is64 ? 0x3E : 0x32, 2),
            shentsize >= (is64 ? 64 : 40), shnum <= Self.maxSections, shstrndx < shnum,
            shoff <= bytes.count, shnum * shentsize <= bytes.count - shoff
        else { return nil }
        struct Raw {
            var nameOffset: Int
            var type: Int
            var offset: Int
            var size: Int
            var address: Int
            var link: Int
            var entrySize: Int
        }
        var raw: [Raw] = []
        raw.reserveCapacity(shnum)
        for i in 0..<shnum {
            let h = shoff + i * shentsize
            guard let name = read(h, 4), let type = read(h + 4, 4),
                let offset = read(h + (is64 ? 0x18 : 0x10), word), let size = read(h + (is64 ? 0x20 : 0x14), word),
                let address = read(h + (is64 ? 0x10 : 0x0C), word), let link = read(h + (is64 ? 0x28 : 0x18), 4),
                let entrySize = read(h + (is64 ? 0x38 : 0x24), word)
            else { return nil }
            raw.append(Raw(nameOffset: name, type: type, offset: offset, size: size, address: address, link: link, entrySize: entrySize))
        }
        let strings = raw[shstrndx]
        guard strings.offset <= bytes.count, strings.size <= bytes.count - strings.offset else { return nil }
        func name(at offset: Int) -> String {
            guard offset < strings.size else { return "" }
            var end = strings.offset + offset
            let limit = strings.offset + strings.size
            while end < limit, bytes[end] != 0 { end += 1 }
            return String(decoding: bytes[(strings.offset + offset)..<end], as: UTF8.self)
        }
        var sections: [Section] = []
        for (index, r) in raw.enumerated() where index > 0 {
            let nobits = r.type == 8
            // A section claiming bytes beyond the file is reported with what the file holds of it.
            let offset = min(r.offset, bytes.count)
            let size = nobits ? 0 : min(r.size, bytes.count - offset)
            sections.append(
                Section(
                    name: name(at: r.nameOffset), offset: offset, size: size, hasFileBytes: !nobits, type: r.type, address: r.address,
                    link: r.link, entrySize: r.entrySize))
        }
        self.sections = sections
        self.is64 = is64
        self.littleEndian = little
    }

    /// Names of the sections whose bytes (or presence) differ between two ELF files, in the order of
    /// `original`, then those only `rebuilt` has. Same-named sections are matched in order.
    public static func differingSections(original: [UInt8], rebuilt: [UInt8]) -> [String]? {
        guard let a = ELFSectionTable(original), let b = ELFSectionTable(rebuilt) else { return nil }
        func digests(_ table: ELFSectionTable, _ bytes: [UInt8]) -> [(String, String)] {
            table.sections.map { s in
                ("\(s.name)", s.hasFileBytes ? SHA256.hash(data: bytes[s.offset..<(s.offset + s.size)]).hexString : "nobits:\(s.size)")
            }
        }
        var remaining = digests(b, rebuilt)
        var differing: [String] = []
        for (name, digest) in digests(a, original) {
            if let i = remaining.firstIndex(where: { $0.0 == name }) {
                if remaining[i].1 != digest { differing.append(name) }
                remaining.remove(at: i)
            } else {
                differing.append(name)
            }
        }
        differing += remaining.map(\.0)
        return differing
    }
}
