import Foundation

/// Base64 as Kiln reads and writes it: DSSE envelopes and uploaded archives (standard alphabet) and
/// worker credentials (URL-safe, unpadded, so they fit in a header and a URL).
public enum Base64 {
    /// Decodes the standard or the URL-safe alphabet, with or without padding, ignoring surrounding
    /// white space; nil for anything else.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        var s = text.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.utf8.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { Array($0) }
    }

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString()
    }

    /// The URL-safe alphabet without padding (RFC 4648 §5).
    public static func encodeURLSafe(_ bytes: some Sequence<UInt8>) -> String {
        encode(bytes).replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
