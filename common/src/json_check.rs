//! A quick yes for plain JSON documents.
//!
//! The processor checks every record's body before any handler runs, so that a body that is
//! not JSON is dead-lettered as undecodable; the check must refuse exactly what
//! `serde_json::from_slice::<Value>` refuses ([`crate::envelope::read_object_subject`] does,
//! through serde's visitors, at a few hundred instructions per token). Webhook bodies are
//! plain: ASCII or UTF-8 text, short integers, no escapes beyond the simple ones, shallow
//! nesting. [`surely_json`] walks such a document with a few instructions per byte and
//! answers `true` only when it is JSON by a grammar that is a subset of what serde_json
//! accepts; anything outside that subset (a `\u` escape, a long or large number, deep
//! nesting) is `false`, "not sure", and the caller runs the exact check.

/// Nesting the quick check follows; serde_json refuses at 128.
const MAX_DEPTH: usize = 100;
/// Integer digits the quick check takes. serde_json reads an integer too large for `u64`
/// or `i64` as an `f64`, which refuses nothing below about 309 digits; 19 is far inside.
const MAX_INTEGER_DIGITS: usize = 19;
/// Exponent digits: with at most 19 integer digits, `e99` cannot overflow an `f64`.
const MAX_EXPONENT_DIGITS: usize = 2;

/// True when `body` is surely a JSON document serde_json parses; false when it is not, or
/// when the quick grammar cannot tell.
pub fn surely_json(body: &[u8]) -> bool {
    if std::str::from_utf8(body).is_err() {
        return false;
    }
    let mut walk = Walk { bytes: body, at: 0 };
    walk.value(0) && {
        walk.whitespace();
        walk.at == body.len()
    }
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Bytes that end a plain run of string content: the quote, the backslash and the control
/// characters JSON does not allow unescaped.
const STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        stops[c] = true;
        c += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

impl Walk<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        self.whitespace();
        match self.peek() {
            Some(b'{') if depth < MAX_DEPTH => self.object(depth + 1),
            Some(b'[') if depth < MAX_DEPTH => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return true;
        }
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.whitespace();
            if self.peek() != Some(b':') {
                return false;
            }
            self.at += 1;
            if !self.value(depth) {
                return false;
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.at += 1;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// A string with no `\u` escape (the text is UTF-8, checked up front).
    fn string(&mut self) -> bool {
        let bytes = self.bytes;
        let mut at = self.at + 1;
        loop {
            // Plain content runs to the next stop byte.
            while at < bytes.len() && !STRING_STOPS[bytes[at] as usize] {
                at += 1;
            }
            match bytes.get(at) {
                Some(b'"') => {
                    self.at = at + 1;
                    return true;
                }
                Some(b'\\') => match bytes.get(at + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                    _ => return false,
                },
                // A control character, or the end of the text.
                _ => return false,
            }
        }
    }

    fn literal(&mut self, literal: &[u8]) -> bool {
        let end = self.at + literal.len();
        if self.bytes.get(self.at..end) == Some(literal) {
            self.at = end;
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> usize {
        let bytes = self.bytes;
        let start = self.at;
        let mut at = start;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        self.at = at;
        at - start
    }

    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                if self.digits() > MAX_INTEGER_DIGITS {
                    return false;
                }
            }
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            let digits = self.digits();
            if digits == 0 || digits > MAX_EXPONENT_DIGITS {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn serde_accepts(body: &[u8]) -> bool {
        serde_json::from_slice::<Value>(body).is_ok()
    }

    #[test]
    fn plain_documents_are_surely_json() {
        for body in [
            &br#"{"page":{"id":1,"idAsString":"1","title":"Load test page 1","spaceKey":"LOAD","version":1,"creationDate":1764633600000},"userAccountId":"557058:loadgen","timestamp":1764633600000}"#[..],
            br#" { "a" : [ 1 , -2.5e10 , true , false , null , "x\"\\\/\b\f\n\r\t" , { } , [ ] ] } "#,
            "{\"title\":\"Seite über Grüße, 页面\"}".as_bytes(),
            b"0",
            b"-0.0E+00",
            b"\"\"",
            b"[]",
        ] {
            assert!(surely_json(body), "{}", String::from_utf8_lossy(body));
            assert!(serde_accepts(body));
        }
    }

    #[test]
    fn what_serde_refuses_or_the_grammar_cannot_tell_is_not_sure() {
        for body in [
            &b""[..],
            b" ",
            b"{",
            b"{\"a\":1,}",
            b"[1,]",
            b"{\"a\" 1}",
            b"{a:1}",
            b"01",
            b"1.",
            b"1e",
            b"-",
            b"+1",
            b"1e400",
            b"12345678901234567890",
            b"\"\\u00e9\"",
            b"\"\\ud800\"",
            b"\"\\x\"",
            b"\"tab\tinside\"",
            b"\"unterminated",
            b"\xff",
            b"\"\xc3\"",
            b"truex",
            b"nul",
            b"{} {}",
            b"\xef\xbb\xbf{}",
        ] {
            assert!(!surely_json(body), "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!surely_json(deep.as_bytes()));
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(surely_json(fine.as_bytes()));
    }

    /// Bytes that make JSON, and some that break it, in any order.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\"", "\\", "\\\"", "\\n", "\\u0041", "\\ud83d",
            "a", "é", "0", "1", "9", "-", "+", ".", "e", "E", "true", "false", "null", "1e9",
            "1e999", "\t", "\u{1}", "\u{7f}",
        ]);
        prop::collection::vec(pieces, 0..40).prop_map(|parts| parts.concat().into_bytes())
    }

    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1.0e15f64..1.0e15).prop_map(Value::from),
            "[a-zA-Z0-9 _:/.é€-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_sure_yes_is_one_serde_agrees_with(body in jsonish()) {
            if surely_json(&body) {
                prop_assert!(serde_accepts(&body), "{}", String::from_utf8_lossy(&body));
            }
        }

        #[test]
        fn serialized_documents_are_surely_json(value in document()) {
            let body = serde_json::to_vec(&value).expect("serialize");
            prop_assert!(surely_json(&body), "{}", String::from_utf8_lossy(&body));
            let pretty = serde_json::to_vec_pretty(&value).expect("serialize");
            prop_assert!(surely_json(&pretty));
        }
    }
}
