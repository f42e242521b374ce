//! The syntax check of Go's `json.Decoder`, with its error texts.
//!
//! serde_json finds the same mistakes but words them its own way; clients
//! and scripts show or match Go's texts (`invalid character 'o' in literal
//! null (expecting 'u')`), so the first value of a body is scanned here with
//! the contexts of Go's scanner (encoding/json/scanner.go). Like the
//! Decoder, only the first value is read: what follows it is ignored.

use super::DecodeError;

/// How deep objects and arrays may nest. Go's scanner allows 10000, but the
/// scan here and serde_json's parse both recurse, and serde_json stops at
/// 128 anyway: refusing deeper bodies up front keeps a hostile `[[[[…`
/// from overflowing the stack of the thread that serves everyone.
pub const MAX_DEPTH: usize = 128;

/// Checks the first JSON value of `bytes`; returns where it ends.
/// Whitespace only is `Empty`, a value cut short is "unexpected EOF".
pub fn first_value(bytes: &[u8]) -> Result<usize, DecodeError> {
    let mut scan = Scanner {
        bytes,
        at: 0,
        depth: 0,
    };
    scan.skip_space();
    if scan.peek().is_none() {
        return Err(DecodeError::Empty);
    }
    scan.value()?;
    Ok(scan.at)
}

/// Checks that `bytes` is exactly one JSON value, as Go's `json.Unmarshal`
/// does (query parameters such as `filters` are read that way): a value
/// cut short or missing is "unexpected end of JSON input", and anything but
/// white space after it is an error.
pub fn whole_value(bytes: &[u8]) -> Result<(), DecodeError> {
    let end = match first_value(bytes) {
        Err(DecodeError::Empty | DecodeError::UnexpectedEof) => {
            return Err(DecodeError::UnexpectedEnd)
        }
        other => other?,
    };
    let mut scan = Scanner {
        bytes,
        at: end,
        depth: 0,
    };
    scan.skip_space();
    match scan.peek() {
        None => Ok(()),
        Some(c) => Err(invalid(c, "after top-level value")),
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Objects and arrays open around the current byte.
    depth: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The next byte, consumed; the end of the body mid-value is Go's
    /// `io.ErrUnexpectedEOF`.
    fn next(&mut self) -> Result<u8, DecodeError> {
        let c = self.peek().ok_or(DecodeError::UnexpectedEof)?;
        self.at += 1;
        Ok(c)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    /// The next byte that is not whitespace, consumed.
    fn next_token(&mut self) -> Result<u8, DecodeError> {
        self.skip_space();
        self.next()
    }

    fn value(&mut self) -> Result<(), DecodeError> {
        match self.next_token()? {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => self.string(),
            b'-' => self.negative(),
            b'0' => self.after_zero(),
            b'1'..=b'9' => self.after_digit(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            c => Err(invalid(c, "looking for beginning of value")),
        }
    }

    /// An object or array one level deeper, refused past `MAX_DEPTH`.
    fn nested(
        &mut self,
        inner: fn(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn object(&mut self) -> Result<(), DecodeError> {
        let mut first = true;
        loop {
            match self.next_token()? {
                b'}' if first => return Ok(()),
                b'"' => self.string()?,
                c => return Err(invalid(c, "looking for beginning of object key string")),
            }
            first = false;
            match self.next_token()? {
                b':' => {}
                c => return Err(invalid(c, "after object key")),
            }
            self.value()?;
            match self.next_token()? {
                b',' => {}
                b'}' => return Ok(()),
                c => return Err(invalid(c, "after object key:value pair")),
            }
        }
    }

    fn array(&mut self) -> Result<(), DecodeError> {
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value()?;
            match self.next_token()? {
                b',' => {}
                b']' => return Ok(()),
                c => return Err(invalid(c, "after array element")),
            }
        }
    }

    /// The rest of a string, after its opening quote.
    fn string(&mut self) -> Result<(), DecodeError> {
        loop {
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => self.escape()?,
                c if c < 0x20 => return Err(invalid(c, "in string literal")),
                _ => {}
            }
        }
    }

    fn escape(&mut self) -> Result<(), DecodeError> {
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                for _ in 0..4 {
                    let c = self.next()?;
                    if !c.is_ascii_hexdigit() {
                        return Err(invalid(c, "in \\u hexadecimal character escape"));
                    }
                }
                Ok(())
            }
            c => Err(invalid(c, "in string escape code")),
        }
    }

    fn negative(&mut self) -> Result<(), DecodeError> {
        match self.next()? {
            b'0' => self.after_zero(),
            b'1'..=b'9' => self.after_digit(),
            c => Err(invalid(c, "in numeric literal")),
        }
    }

    /// A number ends at the first byte that cannot continue it (or at the
    /// end of the body); the enclosing value judges that byte.
    fn after_digit(&mut self) -> Result<(), DecodeError> {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.after_zero()
    }

    fn after_zero(&mut self) -> Result<(), DecodeError> {
        if self.peek() == Some(b'.') {
            self.at += 1;
            let c = self.next()?;
            if !c.is_ascii_digit() {
                return Err(invalid(c, "after decimal point in numeric literal"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let mut c = self.next()?;
            if c == b'+' || c == b'-' {
                c = self.next()?;
            }
            if !c.is_ascii_digit() {
                return Err(invalid(c, "in exponent of numeric literal"));
            }
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.at += 1;
            }
        }
        Ok(())
    }

    /// The rest of `true`, `false` or `null` after its first letter.
    fn literal(&mut self, word: &str) -> Result<(), DecodeError> {
        for expected in word.bytes().skip(1) {
            let c = self.next()?;
            if c != expected {
                let context = format!("in literal {word} (expecting '{}')", expected as char);
                return Err(invalid(c, &context));
            }
        }
        Ok(())
    }
}

fn invalid(c: u8, context: &str) -> DecodeError {
    DecodeError::Syntax(format!("invalid character {} {context}", quote_char(c)))
}

/// Go's `quoteChar`: the byte in single quotes, escaped as `strconv.Quote`
/// escapes it.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        0x07 => "'\\a'".to_string(),
        0x08 => "'\\b'".to_string(),
        0x0c => "'\\f'".to_string(),
        b'\n' => "'\\n'".to_string(),
        b'\r' => "'\\r'".to_string(),
        b'\t' => "'\\t'".to_string(),
        0x0b => "'\\v'".to_string(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        // Go turns the byte into the rune of the same number.
        c => format!("'{}'", c as char),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> String {
        first_value(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn words_errors_as_go_does() {
        let cases = [
            (
                "{\"Name\": x}",
                "invalid character 'x' looking for beginning of value",
            ),
            (
                "nol",
                "invalid character 'o' in literal null (expecting 'u')",
            ),
            (
                "{\"a\": tru }",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            (
                "{a:1}",
                "invalid character 'a' looking for beginning of object key string",
            ),
            (
                "{\"a\":1,}",
                "invalid character '}' looking for beginning of object key string",
            ),
            ("{\"a\" 1}", "invalid character '1' after object key"),
            (
                "{\"a\":1 \"b\":2}",
                "invalid character '\"' after object key:value pair",
            ),
            ("[1 2]", "invalid character '2' after array element"),
            (
                "[1,]",
                "invalid character ']' looking for beginning of value",
            ),
            ("{\"a\":-x}", "invalid character 'x' in numeric literal"),
            (
                "{\"a\":1.x}",
                "invalid character 'x' after decimal point in numeric literal",
            ),
            (
                "{\"a\":1ex}",
                "invalid character 'x' in exponent of numeric literal",
            ),
            (
                "{\"a\":\"\\q\"}",
                "invalid character 'q' in string escape code",
            ),
            (
                "{\"a\":\"\\u12x4\"}",
                "invalid character 'x' in \\u hexadecimal character escape",
            ),
            (
                "{\"a\":\"\n\"}",
                "invalid character '\\n' in string literal",
            ),
            (
                "{'a':1}",
                "invalid character '\\'' looking for beginning of object key string",
            ),
            ("{\"a\":", "unexpected EOF"),
            ("{\"a\":\"b", "unexpected EOF"),
        ];
        for (body, want) in cases {
            assert_eq!(message(body), want, "{body}");
        }
    }

    #[test]
    fn a_whole_value_is_read_as_unmarshal_reads_it() {
        assert!(whole_value(b" {\"a\":1} ").is_ok());
        let message = |b: &[u8]| whole_value(b).unwrap_err().to_string();
        assert_eq!(
            message(b"{\"a\":1} x"),
            "invalid character 'x' after top-level value"
        );
        assert_eq!(message(b"{\"a\":"), "unexpected end of JSON input");
        assert_eq!(message(b""), "unexpected end of JSON input");
    }

    #[test]
    fn refuses_nesting_past_the_limit_without_recursing_into_it() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(first_value(ok.as_bytes()).is_ok());
        let deep = "[".repeat(1_000_000);
        assert_eq!(first_value(deep.as_bytes()), Err(DecodeError::TooDeep));
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1);
        assert_eq!(first_value(objects.as_bytes()), Err(DecodeError::TooDeep));
    }

    #[test]
    fn reads_only_the_first_value() {
        assert_eq!(
            first_value(b" {\"a\":[1,2.5e-3,null]} trailing").unwrap(),
            22
        );
        assert_eq!(first_value(b"12x").unwrap(), 2);
        assert!(matches!(first_value(b" \n"), Err(DecodeError::Empty)));
    }
}
