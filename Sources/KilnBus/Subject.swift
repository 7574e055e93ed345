/// Subject syntax and matching (design §2): dot-separated tokens of printable ASCII without spaces;
/// `*` matches exactly one token, `>` one or more trailing tokens; wildcards only in subscriptions.
public enum Subject {
    /// Longest subject accepted, in bytes.
    public static let maxLength = 1024

    /// Checks a subject a message is published to (no wildcards allowed).
    public static func validatePublish(_ subject: String) throws(BusError) {
        try validate(subject, allowWildcards: false, what: "subject")
    }

    /// Checks a subscription subject (wildcards allowed).
    public static func validateSubscription(_ subject: String) throws(BusError) {
        try validate(subject, allowWildcards: true, what: "subject")
    }

    public static func isValid(_ subject: String, allowWildcards: Bool) -> Bool {
        // A yes/no question; `validate` is the call that says why.
        (try? validate(subject, allowWildcards: allowWildcards, what: "subject")) != nil
    }

    static func validate(_ subject: String, allowWildcards: Bool, what: String) throws(BusError) {
        let utf8 = subject.utf8
        guard !utf8.isEmpty else { throw .badRequest("invalid \(what): empty") }
        guard utf8.count <= maxLength else { throw .badRequest("invalid \(what): longer than \(maxLength) bytes") }
        var tokenStart = true
        var tokenLength = 0
        var tokenIsWildcard = false
        var sawFullWildcard = false
        for byte in utf8 {
            if sawFullWildcard {
                throw .badRequest("invalid \(what) '\(subject)': '>' must be the last token")
            }
            if byte == UInt8(ascii: ".") {
                if tokenLength == 0 { throw .badRequest("invalid \(what) '\(subject)': empty token") }
                if tokenIsWildcard, !allowWildcards { throw .badRequest("invalid \(what) '\(subject)': wildcards are not allowed here") }
                tokenStart = true
                tokenLength = 0
                tokenIsWildcard = false
                continue
            }
            guard byte > 0x20, byte < 0x7F else {
                throw .badRequest("invalid \(what) '\(subject)': only printable ASCII without spaces is allowed")
            }
            if byte == UInt8(ascii: "*") || byte == UInt8(ascii: ">") {
                if !tokenStart || tokenLength > 0 {
                    throw .badRequest("invalid \(what) '\(subject)': a wildcard must be a whole token")
                }
                guard allowWildcards else { throw .badRequest("invalid \(what) '\(subject)': wildcards are not allowed in a publish subject") }
                tokenIsWildcard = true
                if byte == UInt8(ascii: ">") { sawFullWildcard = true }
            } else if tokenIsWildcard {
                throw .badRequest("invalid \(what) '\(subject)': a wildcard must be a whole token")
            }
            tokenStart = false
            tokenLength += 1
        }
        if tokenLength == 0 { throw .badRequest("invalid \(what) '\(subject)': empty token") }
    }

    /// Does the (literal) `subject` match the subscription `pattern`?
    public static func matches(_ subject: String, pattern: String) -> Bool {
        var s = subject.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        var p = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        while true {
            let pt = p.next()
            let st = s.next()
            switch (pt, st) {
            case (nil, nil): return true
            case (nil, _), (_, nil):
                return false
            case (let pt?, let st?):
                if pt.count == 1, pt.first == UInt8(ascii: ">") { return true }
                if pt.count == 1, pt.first == UInt8(ascii: "*") { continue }
                if !pt.elementsEqual(st) { return false }
            }
        }
    }

    /// Does `pattern` cover every subject `other` could match? (`foo.>` covers `foo.*.bar`; `*` covers
    /// one literal or `*`, never `>`.) Used for permissions on wildcard subscriptions.
    public static func covers(_ pattern: String, _ other: String) -> Bool {
        var o = other.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        var p = pattern.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        while true {
            let pt = p.next()
            let ot = o.next()
            switch (pt, ot) {
            case (nil, nil): return true
            case (nil, _), (_, nil): return false
            case (let pt?, let ot?):
                let pFull = pt.count == 1 && pt.first == UInt8(ascii: ">")
                let pOne = pt.count == 1 && pt.first == UInt8(ascii: "*")
                let oFull = ot.count == 1 && ot.first == UInt8(ascii: ">")
                if pFull { return true }
                if oFull { return false }
                if pOne { continue }
                let oOne = ot.count == 1 && ot.first == UInt8(ascii: "*")
                if oOne || !pt.elementsEqual(ot) { return false }
            }
        }
    }

    /// Could some literal subject match both patterns? Used so a subscribe-deny on `secret.x` also
    /// filters deliveries to a `secret.*` subscription.
    public static func overlaps(_ a: String, _ b: String) -> Bool {
        var x = a.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        var y = b.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).makeIterator()
        while true {
            let xt = x.next()
            let yt = y.next()
            switch (xt, yt) {
            case (nil, nil): return true
            case (_?, nil), (nil, _?): return false
            case (let xt?, let yt?):
                let xFull = xt.count == 1 && xt.first == UInt8(ascii: ">")
                let yFull = yt.count == 1 && yt.first == UInt8(ascii: ">")
                if xFull || yFull { return true }
                let xOne = xt.count == 1 && xt.first == UInt8(ascii: "*")
                let yOne = yt.count == 1 && yt.first == UInt8(ascii: "*")
                if xOne || yOne { continue }
                if !xt.elementsEqual(yt) { return false }
            }
        }
    }
}
