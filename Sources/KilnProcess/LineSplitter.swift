/// Splits a byte stream into lines, cutting any line longer than `maxLineBytes`.
public struct LineSplitter {
    let maxLineBytes: Int
    private var pending: [UInt8] = []
    private var dropping = false

    public init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer, emit: (String) -> Void) {
        for b in bytes {
            if b == 0x0A {
                if !dropping { emit(String(decoding: pending, as: UTF8.self)) }
                pending.removeAll(keepingCapacity: true)
                dropping = false
            } else if !dropping {
                if pending.count >= maxLineBytes {
                    emit(String(decoding: pending, as: UTF8.self) + " …[line cut at \(maxLineBytes) bytes]")
                    pending.removeAll(keepingCapacity: true)
                    dropping = true
                } else {
                    pending.append(b)
                }
            }
        }
    }

    public mutating func finish(emit: (String) -> Void) {
        if !pending.isEmpty && !dropping { emit(String(decoding: pending, as: UTF8.self)) }
        pending.removeAll()
    }
}
