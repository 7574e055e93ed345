import KilnArchive

extension RebuildComparison {
    /// Every regular file of two artifact directories compared (`artifacts/` + its path), read only
    /// through the confined view (no link followed), each at most `maxFileBytes`. A missing directory
    /// counts as empty. Used by the rebuilding worker and by `kiln rebuild` alike.
    public static func compare(original: ConfinedDirectory?, rebuilt: ConfinedDirectory?, maxFileBytes: Int64) throws -> [Artifact] {
        func files(_ directory: ConfinedDirectory?) throws -> Set<String> {
            Set(try directory?.walk().filter { $0.kind == .file }.map(\.path) ?? [])
        }
        let (a, b) = (try files(original), try files(rebuilt))
        return try a.union(b).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { name in
            compare(
                name: "artifacts/" + name,
                original: a.contains(name) ? try original!.openFile(name, maxBytes: maxFileBytes).readAll() : nil,
                rebuilt: b.contains(name) ? try rebuilt!.openFile(name, maxBytes: maxFileBytes).readAll() : nil)
        }
    }
}
