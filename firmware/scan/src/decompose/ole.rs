//! Embedded OLE objects: the OLE1 object layout RTF `\objdata` carries, the Packager format that
//! wraps a file dropped into a document (in OLE1 native data and in OLE2 `\x01Ole10Native`
//! streams), and PowerPoint's compressed `ExOleObjStg` records. Each is how an executable rides in
//! an Office document; every length in them is untrusted and checked against the bytes present.

use super::Malformed;

/// A file wrapped by the Packager (class `Package`): its name and bytes.
#[derive(Debug)]
pub(super) struct PackagedFile<'a> {
    /// The file name: the last component of the original path, else the label; None when both are empty.
    pub name: Option<String>,
    /// The file's bytes.
    pub data: &'a [u8],
}

/// An OLE1 embedded object (the layout of RTF `\objdata`).
#[derive(Debug)]
pub(super) struct Ole1Object<'a> {
    /// The object's class (`Package`, `Word.Document.8`, …).
    pub class: String,
    /// The server's native data: a Packager structure, an OLE2 compound file, or the server's own format.
    pub native: &'a [u8],
}

/// Reads little-endian fields from a byte slice without ever reading past it.
struct Fields<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Self {
        Fields { data, at: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or(Malformed(what))?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string ending in NUL (the NUL is consumed, not returned).
    fn c_string(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let rest = &self.data[self.at..];
        let len = rest.iter().position(|&b| b == 0).ok_or(Malformed(what))?;
        self.at += len + 1;
        Ok(&rest[..len])
    }

    /// A string preceded by its 32-bit length (which counts its NUL, if any).
    fn sized_string(&mut self, what: &'static str) -> Result<&'a [u8], Malformed> {
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        Ok(bytes.strip_suffix(b"\0").unwrap_or(bytes))
    }

    fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }
}

/// Parses an OLE1 object: version, format (2 = embedded), class, topic and item names, native data.
pub(super) fn ole1_object(data: &[u8]) -> Result<Ole1Object<'_>, Malformed> {
    let mut f = Fields::new(data);
    let _version = f.u32("OLE1 header is cut short")?;
    let format = f.u32("OLE1 header is cut short")?;
    if format != 2 {
        return Err(Malformed("not an embedded OLE1 object"));
    }
    let class = f.sized_string("OLE1 class name is cut short")?;
    if class.len() > 256 {
        return Err(Malformed("OLE1 class name is too long"));
    }
    f.sized_string("OLE1 topic name is cut short")?;
    f.sized_string("OLE1 item name is cut short")?;
    let size = f.u32("OLE1 native data size is missing")? as usize;
    let native = f.take(size, "OLE1 native data is cut short")?;
    Ok(Ole1Object {
        class: String::from_utf8_lossy(class).into_owned(),
        native,
    })
}

/// Parses Packager native data: signature, label, original path, then (for an embedded file)
/// the temporary path and the file itself. A package that only links to a file is `Ok(None)`.
pub(super) fn packaged_file(native: &[u8]) -> Result<Option<PackagedFile<'_>>, Malformed> {
    let mut f = Fields::new(native);
    f.u16("Packager header is cut short")?;
    let label = f.c_string("Packager label is not terminated")?;
    let original = f.c_string("Packager path is not terminated")?;
    f.u16("Packager header is cut short")?;
    let kind = f.u16("Packager header is cut short")?;
    if kind != 3 {
        return Ok(None);
    }
    f.sized_string("Packager temporary path is cut short")?;
    let size = f.u32("Packager file size is missing")? as usize;
    let data = f.take(size, "Packager file is cut short")?;
    Ok(Some(PackagedFile {
        name: file_name(original).or_else(|| file_name(label)),
        data,
    }))
}

/// The file in an OLE2 `\x01Ole10Native` stream: a 32-bit size, then the native data, which is
/// a Packager structure for a dropped file. Other native data is returned whole, unnamed.
pub(super) fn ole10_native(stream: &[u8]) -> Result<PackagedFile<'_>, Malformed> {
    let mut f = Fields::new(stream);
    let size = f.u32("Ole10Native size is missing")? as usize;
    let native = &f.rest()[..size.min(f.rest().len())];
    Ok(packaged_file(native)
        .ok()
        .flatten()
        .unwrap_or(PackagedFile {
            name: None,
            data: native,
        }))
}

/// The last component of a Windows path or a label, as a file name.
fn file_name(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    text.rsplit(['\\', '/'])
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A PowerPoint `ExOleObjStg` record: an embedded object's storage, zlib-compressed or not.
#[derive(Debug)]
pub(super) enum PowerPointObject<'a> {
    /// Instance 1: the declared decompressed size, then a zlib stream.
    Compressed { declared_size: u32, zlib: &'a [u8] },
    /// Instance 0: the storage as it is.
    Stored(&'a [u8]),
}

/// Record type of `ExOleObjStg` (MS-PPT 2.13.24).
const EX_OLE_OBJ_STG: u16 = 0x1011;

/// Containers nest this deep at most in real files; deeper is treated as damage, not recursed into.
const MAX_RECORD_DEPTH: usize = 32;

/// Every `ExOleObjStg` record in a "PowerPoint Document" stream, at most `max`. Records are an
/// 8-byte header (version and instance, type, length) and a body; version 0xF marks a container
/// of further records. A record that runs past its container stops the walk of that container.
pub(super) fn powerpoint_objects(stream: &[u8], max: usize) -> Vec<PowerPointObject<'_>> {
    let mut found = Vec::new();
    // (start, end) of record lists still to walk, with their nesting depth.
    let mut pending = vec![(0usize, stream.len(), 0usize)];
    while let Some((mut at, end, depth)) = pending.pop() {
        while at + 8 <= end && found.len() < max {
            let header = &stream[at..at + 8];
            let version_instance = u16::from_le_bytes([header[0], header[1]]);
            let kind = u16::from_le_bytes([header[2], header[3]]);
            let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            let body_start = at + 8;
            let Some(body_end) = body_start.checked_add(len).filter(|&e| e <= end) else {
                break;
            };
            let body = &stream[body_start..body_end];
            if version_instance & 0xf == 0xf {
                if depth < MAX_RECORD_DEPTH {
                    pending.push((body_start, body_end, depth + 1));
                }
            } else if kind == EX_OLE_OBJ_STG {
                match version_instance >> 4 {
                    1 if body.len() >= 4 => found.push(PowerPointObject::Compressed {
                        declared_size: u32::from_le_bytes([body[0], body[1], body[2], body[3]]),
                        zlib: &body[4..],
                    }),
                    0 => found.push(PowerPointObject::Stored(body)),
                    _ => {}
                }
            }
            at = body_end;
        }
    }
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Packager native data holding `data` as `name`, as Windows writes it.
    pub(crate) fn package_of(name: &str, data: &[u8]) -> Vec<u8> {
        let path = format!("C:\\Users\\a\\Desktop\\{name}");
        let mut out = vec![2, 0];
        for s in [name, &path] {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(&[0, 0, 3, 0]);
        out.extend_from_slice(&(path.len() as u32 + 1).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&[0; 8]);
        out
    }

    /// An OLE1 embedded object of `class` with `native` data.
    pub(crate) fn ole1_of(class: &str, native: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0x0501u32.to_le_bytes());
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&(class.len() as u32 + 1).to_le_bytes());
        out.extend_from_slice(class.as_bytes());
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(native.len() as u32).to_le_bytes());
        out.extend_from_slice(native);
        out
    }

    #[test]
    fn a_packaged_file_in_an_ole1_object_is_found_with_its_name() {
        let object = ole1_of("Package", &package_of("run.exe", b"MZ payload"));
        let parsed = ole1_object(&object).unwrap();
        assert_eq!(parsed.class, "Package");
        let file = packaged_file(parsed.native).unwrap().unwrap();
        assert_eq!(file.name.as_deref(), Some("run.exe"));
        assert_eq!(file.data, b"MZ payload");
    }

    #[test]
    fn an_ole10native_stream_yields_the_packaged_file() {
        let native = package_of("clam.exe", b"MZ bytes");
        let mut stream = (native.len() as u32).to_le_bytes().to_vec();
        stream.extend_from_slice(&native);
        let file = ole10_native(&stream).unwrap();
        assert_eq!(file.name.as_deref(), Some("clam.exe"));
        assert_eq!(file.data, b"MZ bytes");
    }

    #[test]
    fn every_truncation_of_an_object_is_an_error_not_a_panic() {
        let object = ole1_of("Package", &package_of("run.exe", &[7u8; 300]));
        for cut in 0..object.len() {
            let _ = ole1_object(&object[..cut]).map(|o| packaged_file(o.native));
            let _ = ole10_native(&object[..cut]);
        }
        assert!(ole1_object(&object[..object.len() - 1]).is_err());
        let mut huge = ole1_of("Package", b"x");
        let at = huge.len() - 5;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            ole1_object(&huge).unwrap_err(),
            Malformed("OLE1 native data is cut short")
        );
    }

    #[test]
    fn compressed_powerpoint_objects_are_found_inside_containers() {
        let mut inner = Vec::new();
        inner.extend_from_slice(&0x0010u16.to_le_bytes());
        inner.extend_from_slice(&EX_OLE_OBJ_STG.to_le_bytes());
        inner.extend_from_slice(&8u32.to_le_bytes());
        inner.extend_from_slice(&[0x10, 0, 0, 0, b'z', b'l', b'i', b'b']);
        let mut stream = Vec::new();
        stream.extend_from_slice(&0x000fu16.to_le_bytes());
        stream.extend_from_slice(&0x03e8u16.to_le_bytes());
        stream.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        stream.extend_from_slice(&inner);
        let found = powerpoint_objects(&stream, 10);
        assert!(matches!(
            found[..],
            [PowerPointObject::Compressed {
                declared_size: 16,
                zlib: b"zlib"
            }]
        ));
        // A record longer than its container is not read.
        let last = stream.len() - 1;
        assert!(powerpoint_objects(&stream[..last], 10).is_empty());
    }
}
