//! Embedded files in PDF documents: the `/Type /EmbeddedFile` streams, with the names their file
//! specifications give them. Objects are found by scanning for `N G obj`, not through the
//! cross-reference table, so damaged and incrementally updated files are read as viewers read them.
//! Objects inside compressed object streams are not parsed (their streams still are found).

/// Deepest nesting of arrays and dictionaries parsed; deeper values are cut off.
const MAX_NESTING: usize = 32;

/// Most entries kept per array or dictionary.
const MAX_ENTRIES: usize = 4096;

/// A parsed PDF value (only what locating embedded files needs).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Name(Vec<u8>),
    Integer(i64),
    String(Vec<u8>),
    Array(Vec<Value>),
    Dictionary(Vec<(Vec<u8>, Value)>),
    /// `N G R`.
    Reference(u32),
    /// Numbers with a fraction, booleans, null and anything else.
    Other,
}

impl Value {
    /// The value of `key` in a dictionary.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Value> {
        match self {
            Value::Dictionary(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_name(&self, name: &[u8]) -> bool {
        matches!(self, Value::Name(n) if n == name)
    }
}

/// A stream object: its dictionary and its still-encoded bytes.
pub(super) struct Stream<'a> {
    pub(super) object: u32,
    pub(super) dictionary: Value,
    pub(super) raw: &'a [u8],
}

/// What decoding a stream takes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    /// No filter: the bytes as stored.
    None,
    /// `/FlateDecode`, once or several times over.
    Flate { times: usize },
    /// A filter (or predictor) we do not decode, by name.
    Unsupported(String),
}

impl Stream<'_> {
    /// Whether this stream is an embedded file.
    pub(super) fn is_embedded_file(&self) -> bool {
        self.dictionary
            .get(b"Type")
            .is_some_and(|t| t.is_name(b"EmbeddedFile"))
    }

    /// How the stream is encoded.
    pub(super) fn encoding(&self) -> Encoding {
        let filters: Vec<&Value> = match self.dictionary.get(b"Filter") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.iter().collect(),
            Some(one) => vec![one],
        };
        let mut times = 0;
        for filter in filters {
            match filter {
                Value::Name(n) if n == b"FlateDecode" || n == b"Fl" => times += 1,
                Value::Name(n) => {
                    return Encoding::Unsupported(String::from_utf8_lossy(n).into_owned());
                }
                _ => return Encoding::Unsupported("(not a name)".to_owned()),
            }
        }
        // PNG/TIFF predictors change the decoded bytes again; not worth it for embedded files.
        let predictor =
            |parms: &Value| matches!(parms.get(b"Predictor"), Some(Value::Integer(p)) if *p > 1);
        let predicted = match self.dictionary.get(b"DecodeParms") {
            Some(Value::Array(list)) => list.iter().any(predictor),
            Some(parms) => predictor(parms),
            None => false,
        };
        match times {
            0 => Encoding::None,
            // Each layer is a decoder with its own buffers; nobody needs more than a couple.
            5.. => Encoding::Unsupported("FlateDecode more than 4 times".to_owned()),
            _ if predicted => Encoding::Unsupported("FlateDecode with a predictor".to_owned()),
            times => Encoding::Flate { times },
        }
    }
}

/// The objects of a document, as found by scanning.
pub(super) struct Document<'a> {
    pub(super) streams: Vec<Stream<'a>>,
    /// Embedded-file stream object → the name its file specification gives it.
    pub(super) names: Vec<(u32, Vec<u8>)>,
}

impl Document<'_> {
    /// The name the file specification gives the embedded file in `object`.
    pub(super) fn name_of(&self, object: u32) -> Option<&[u8]> {
        self.names
            .iter()
            .find(|(o, _)| *o == object)
            .map(|(_, n)| n.as_slice())
    }
}

/// Scans `data` for objects. Never fails: what cannot be parsed is skipped.
///
/// Each object's value is parsed only up to the next object header or `endobj`, so broken objects (an
/// unterminated string) cost no more than their own bytes, and the whole scan stays linear in the input.
pub(super) fn scan(data: &[u8]) -> Document<'_> {
    let mut document = Document {
        streams: Vec::new(),
        names: Vec::new(),
    };
    let headers = object_headers(data);
    let ends = occurrences(data, b"endobj");
    let mut from = 0;
    for (i, &(keyword, object)) in headers.iter().enumerate() {
        // Headers inside the bytes of a stream already taken are stream content.
        if keyword < from {
            continue;
        }
        let after = keyword + 3;
        let next_header = headers.get(i + 1).map_or(data.len(), |&(k, _)| k);
        let next_end = ends
            .get(ends.partition_point(|&e| e < after))
            .copied()
            .unwrap_or(data.len());
        let mut parser = Parser {
            data: &data[..next_header.min(next_end)],
            at: after,
        };
        let Some(value) = parser.value(0) else {
            continue;
        };
        collect_names(&value, &mut document.names, 0);
        parser.skip_blank();
        if matches!(value, Value::Dictionary(_))
            && data
                .get(parser.at..)
                .is_some_and(|d| d.starts_with(b"stream"))
        {
            let mut start = parser.at + 6;
            // The keyword is followed by CRLF or LF (a lone CR is tolerated).
            if data[start..].starts_with(b"\r\n") {
                start += 2;
            } else if data.get(start).is_some_and(|&b| b == b'\n' || b == b'\r') {
                start += 1;
            }
            let raw = stream_bytes(data, start, value.get(b"Length"));
            from = start + raw.len();
            document.streams.push(Stream {
                object,
                dictionary: value,
                raw,
            });
        }
    }
    document
}

/// Where each `N G obj` keyword is, with its object number, in order.
fn object_headers(data: &[u8]) -> Vec<(usize, u32)> {
    occurrences(data, b"obj")
        .into_iter()
        .filter(|&k| !data.get(k + 3).is_some_and(|&b| is_regular(b)))
        .filter_map(|k| Some((k, object_number(&data[..k])?)))
        .collect()
}

/// Every position of `needle` in `data`, in order.
fn occurrences(data: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&data[from..], needle) {
        found.push(from + at);
        from += at + needle.len();
    }
    found
}

/// The stream's bytes: `/Length` when it is a direct number that ends at `endstream`, else up to the next
/// `endstream` (less the end of line before it), else to the end of the data.
fn stream_bytes<'a>(data: &'a [u8], start: usize, length: Option<&Value>) -> &'a [u8] {
    let rest = &data[start..];
    if let Some(Value::Integer(n)) = length
        && let Ok(n) = usize::try_from(*n)
        && let Some(stated) = rest.get(..n)
    {
        let tail = &rest[n..];
        let blank = tail.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if tail[blank..].starts_with(b"endstream") {
            return stated;
        }
    }
    let end = find(rest, b"endstream").unwrap_or(rest.len());
    let stream = &rest[..end];
    let stream = stream.strip_suffix(b"\n").unwrap_or(stream);
    stream.strip_suffix(b"\r").unwrap_or(stream)
}

/// Records `/EF` entries of file specifications anywhere inside `value`: the referenced stream and the
/// specification's name (`/UF` before `/F`).
fn collect_names(value: &Value, names: &mut Vec<(u32, Vec<u8>)>, depth: usize) {
    if depth > MAX_NESTING {
        return;
    }
    match value {
        Value::Dictionary(entries) => {
            if let Some(ef) = value.get(b"EF") {
                let name = [b"UF".as_slice(), b"F"]
                    .iter()
                    .find_map(|key| match value.get(key) {
                        Some(Value::String(s)) if !s.is_empty() => Some(text_string(s)),
                        _ => None,
                    });
                if let Some(name) = name {
                    for key in [b"UF".as_slice(), b"F"] {
                        if let Some(Value::Reference(object)) = ef.get(key) {
                            names.push((*object, name.clone()));
                        }
                    }
                }
            }
            for (_, v) in entries {
                collect_names(v, names, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_names(v, names, depth + 1);
            }
        }
        _ => {}
    }
}

/// A PDF text string as UTF-8: UTF-16BE when it starts with the byte order mark, else taken as Latin-1
/// (close enough to PDFDocEncoding for a file name).
fn text_string(s: &[u8]) -> Vec<u8> {
    let text: String = match s.strip_prefix(b"\xfe\xff") {
        Some(utf16) => char::decode_utf16(
            utf16
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        None => s.iter().map(|&b| char::from(b)).collect(),
    };
    text.into_bytes()
}

/// The object number in `… N G ` just before an `obj` keyword.
fn object_number(before: &[u8]) -> Option<u32> {
    let mut end = before.len();
    let mut numbers = [0u32; 2];
    // Only a few bytes are looked at, so that a long run of blanks or digits costs nothing per keyword.
    for slot in numbers.iter_mut().rev() {
        let blanks = before[..end]
            .iter()
            .rev()
            .take(16)
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        end -= blanks;
        let digits = before[..end]
            .iter()
            .rev()
            .take(11)
            .take_while(|b| b.is_ascii_digit())
            .count();
        let start = end - digits;
        if digits == 0 || digits > 10 {
            return None;
        }
        *slot = std::str::from_utf8(&before[start..end])
            .ok()?
            .parse()
            .ok()?;
        end = start;
    }
    Some(numbers[0])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// PDF delimiters end names, numbers and keywords.
fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

fn is_regular(b: u8) -> bool {
    !b.is_ascii_whitespace() && b != 0 && !is_delimiter(b)
}

/// A recursive-descent parser over the bytes after `obj`; nesting is bounded by [`MAX_NESTING`].
struct Parser<'a> {
    data: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.at).copied()
    }

    /// Skips white space (NUL counts) and comments.
    fn skip_blank(&mut self) {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || b == 0 {
                self.at += 1;
            } else if b == b'%' {
                while self.peek().is_some_and(|b| b != b'\n' && b != b'\r') {
                    self.at += 1;
                }
            } else {
                break;
            }
        }
    }

    fn regular_token(&mut self) -> &[u8] {
        let start = self.at;
        while self.peek().is_some_and(is_regular) {
            self.at += 1;
        }
        &self.data[start..self.at]
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_NESTING {
            return None;
        }
        self.skip_blank();
        match self.peek()? {
            b'/' => {
                self.at += 1;
                Some(Value::Name(name_text(self.regular_token())))
            }
            b'(' => self.literal_string().map(Value::String),
            b'<' if self.data.get(self.at + 1) == Some(&b'<') => {
                self.at += 2;
                let mut entries = Vec::new();
                loop {
                    self.skip_blank();
                    match self.peek()? {
                        b'>' => {
                            self.at += 1;
                            if self.peek() == Some(b'>') {
                                self.at += 1;
                            }
                            return Some(Value::Dictionary(entries));
                        }
                        b'/' => {
                            self.at += 1;
                            let key = name_text(self.regular_token());
                            let value = self.value(depth + 1)?;
                            if entries.len() < MAX_ENTRIES {
                                entries.push((key, value));
                            }
                        }
                        // A stray token where a key should be: skip it as viewers do.
                        _ => {
                            self.value(depth + 1)?;
                        }
                    }
                }
            }
            b'<' => self.hex_string().map(Value::String),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank();
                    if self.peek()? == b']' {
                        self.at += 1;
                        return Some(Value::Array(items));
                    }
                    let item = self.value(depth + 1)?;
                    if items.len() < MAX_ENTRIES {
                        items.push(item);
                    }
                }
            }
            b if b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.' => {
                let token = self.regular_token();
                let Ok(number) = std::str::from_utf8(token).unwrap_or("x").parse::<i64>() else {
                    return Some(Value::Other);
                };
                // `N G R` is a reference; look ahead without consuming anything else.
                let save = self.at;
                self.skip_blank();
                let generation = self.regular_token();
                if !generation.is_empty() && generation.iter().all(u8::is_ascii_digit) {
                    self.skip_blank();
                    if self.regular_token() == b"R"
                        && let Ok(object) = u32::try_from(number)
                    {
                        return Some(Value::Reference(object));
                    }
                }
                self.at = save;
                Some(Value::Integer(number))
            }
            b if is_regular(b) => {
                self.regular_token();
                Some(Value::Other)
            }
            // `)`, `>`, `]`, `{`, `}` out of place.
            _ => {
                self.at += 1;
                Some(Value::Other)
            }
        }
    }

    /// `( … )` with balanced parentheses and backslash escapes.
    fn literal_string(&mut self) -> Option<Vec<u8>> {
        self.at += 1;
        let mut out = Vec::new();
        let mut open = 1;
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'\\' => {
                    let e = self.peek()?;
                    self.at += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'0'..=b'7' => {
                            let mut n = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        n = n * 8 + u32::from(d - b'0');
                                        self.at += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push(n as u8);
                        }
                        b'\r' => {
                            if self.peek() == Some(b'\n') {
                                self.at += 1;
                            }
                        }
                        b'\n' => {}
                        other => out.push(other),
                    }
                }
                b'(' => {
                    open += 1;
                    out.push(b);
                }
                b')' => {
                    open -= 1;
                    if open == 0 {
                        return Some(out);
                    }
                    out.push(b);
                }
                _ => out.push(b),
            }
        }
    }

    /// `< hex digits >`; an odd last digit counts as followed by 0.
    fn hex_string(&mut self) -> Option<Vec<u8>> {
        self.at += 1;
        let mut digits = Vec::new();
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'>' => break,
                b if b.is_ascii_hexdigit() => digits.push(char::from(b).to_digit(16)? as u8),
                _ => {}
            }
        }
        if digits.len() % 2 == 1 {
            digits.push(0);
        }
        Some(digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect())
    }
}

/// A name token with its `#xx` escapes decoded.
fn name_text(token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    let mut i = 0;
    while i < token.len() {
        if token[i] == b'#'
            && let Some(hex) = token.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(token[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;

    use super::*;

    /// A small PDF with one page and `file` attached as `name`, its stream deflated when `deflate`.
    pub(in crate::decompose) fn pdf_with_attachment(
        name: &str,
        file: &[u8],
        deflate: bool,
    ) -> Vec<u8> {
        let (filter, stream) = if deflate {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(file).unwrap();
            ("/Filter /FlateDecode ", encoder.finish().unwrap())
        } else {
            ("", file.to_vec())
        };
        let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        pdf.extend_from_slice(
            b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(x) 4 0 R] >> >> >>\nendobj\n\
              2 0 obj\n<< /Type /Pages /Count 0 /Kids [] >>\nendobj\n",
        );
        pdf.extend_from_slice(
            format!(
                "3 0 obj\n<< /Type /EmbeddedFile {filter}/Length {} >>\nstream\n",
                stream.len()
            )
            .as_bytes(),
        );
        pdf.extend_from_slice(&stream);
        pdf.extend_from_slice(b"\nendstream\nendobj\n");
        pdf.extend_from_slice(
            format!("4 0 obj\n<< /Type /Filespec /F ({name}) /EF << /F 3 0 R >> >>\nendobj\n")
                .as_bytes(),
        );
        pdf.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
        pdf
    }

    #[test]
    fn embedded_file_is_found_with_its_name_and_encoding() {
        for deflate in [false, true] {
            let pdf = pdf_with_attachment("report.exe", b"MZ payload", deflate);
            let document = scan(&pdf);
            let embedded: Vec<&Stream> = document
                .streams
                .iter()
                .filter(|s| s.is_embedded_file())
                .collect();
            assert_eq!(embedded.len(), 1);
            assert_eq!(embedded[0].object, 3);
            assert_eq!(document.name_of(3), Some(&b"report.exe"[..]));
            if deflate {
                assert_eq!(embedded[0].encoding(), Encoding::Flate { times: 1 });
            } else {
                assert_eq!(embedded[0].encoding(), Encoding::None);
                assert_eq!(embedded[0].raw, b"MZ payload");
            }
        }
    }

    #[test]
    fn values_parse_as_pdf_writes_them() {
        let mut parser = Parser {
            data: b"<< /A [1 2 0 R (a\\(b\\)) <414> /N#41me] /B << /C -3 >> /D 1.5 /E true >>",
            at: 0,
        };
        let value = parser.value(0).unwrap();
        assert_eq!(
            value.get(b"A"),
            Some(&Value::Array(vec![
                Value::Integer(1),
                Value::Reference(2),
                Value::String(b"a(b)".to_vec()),
                Value::String(b"A@".to_vec()),
                Value::Name(b"NAme".to_vec()),
            ]))
        );
        assert_eq!(
            value.get(b"B").and_then(|b| b.get(b"C")),
            Some(&Value::Integer(-3))
        );
        assert_eq!(value.get(b"D"), Some(&Value::Other));
        assert_eq!(text_string(b"\xfe\xff\x00a\x00b"), b"ab");
    }

    #[test]
    fn truncated_garbled_and_deeply_nested_input_never_panics() {
        let pdf = pdf_with_attachment("a.exe", b"MZ payload that is a little longer", true);
        for cut in 0..pdf.len() {
            let document = scan(&pdf[..cut]);
            for stream in &document.streams {
                assert!(stream.raw.len() <= cut);
                let _ = stream.encoding();
            }
        }
        let mut seed = 0xdead_beef_cafe_f00du64;
        for _ in 0..2000 {
            let mut garbled = pdf.clone();
            for _ in 0..6 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % garbled.len();
                garbled[at] = b"<>[]()/\\ 0R"[(seed >> 40) as usize % 11];
            }
            let _ = scan(&garbled);
        }
        let mut deep = b"1 0 obj ".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        deep.extend(std::iter::repeat_n(b"<<".as_slice(), 100_000).flatten());
        assert!(scan(&deep).streams.is_empty());
    }

    #[test]
    fn clamav_test_file_embeds_clam_exe() {
        let dir = std::path::Path::new("/usr/share/clamav-testfiles");
        let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
            eprintln!(
                "skipped: {} not installed (apt-get install clamav-testfiles)",
                dir.display()
            );
            return;
        };
        let pdf = std::fs::read(dir.join("clam.pdf")).expect("clam.pdf");
        let document = scan(&pdf);
        let embedded: Vec<&Stream> = document
            .streams
            .iter()
            .filter(|s| s.is_embedded_file())
            .collect();
        assert_eq!(embedded.len(), 1);
        assert_eq!(embedded[0].encoding(), Encoding::None);
        assert_eq!(embedded[0].raw, clam);
        assert_eq!(document.name_of(embedded[0].object), Some(&b"clam.exe"[..]));
    }
}
