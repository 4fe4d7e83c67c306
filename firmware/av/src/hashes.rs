//! Hash signatures (ClamAV .hdb/.hsb/.mdb): sorted arrays searched by binary search.
//!
//! A million MD5 signatures take 24 MB here (4 bytes size + 16 bytes digest + 4 bytes name id);
//! a hash table would cost twice that. A buffer is hashed only when some signature has exactly its
//! size (or a signature accepts any size), so most files are never hashed at all.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::names::NameId;

/// The digest algorithm of a hash signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// MD5 (32 hex digits), the classic ClamAV .hdb/.mdb hash.
    Md5,
    /// SHA-1 (40 hex digits), used in .hsb/.msb.
    Sha1,
    /// SHA-256 (64 hex digits), used in .hsb/.msb.
    Sha256,
}

impl HashKind {
    /// The algorithm whose hex digest has this many digits.
    pub(crate) fn from_hex_len(len: usize) -> Option<HashKind> {
        match len {
            32 => Some(HashKind::Md5),
            40 => Some(HashKind::Sha1),
            64 => Some(HashKind::Sha256),
            _ => None,
        }
    }
}

impl std::fmt::Display for HashKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HashKind::Md5 => "MD5",
            HashKind::Sha1 => "SHA-1",
            HashKind::Sha256 => "SHA-256",
        })
    }
}

/// One hash signature: the size it applies to, the digest, and the malware name.
#[derive(Clone, Copy, Debug)]
struct HashEntry<const N: usize> {
    size: u32,
    digest: [u8; N],
    name: NameId,
}

/// The signatures of one digest algorithm.
#[derive(Debug, Default)]
struct HashTable<const N: usize> {
    /// Sorted by (size, digest) once loading is over.
    sized: Vec<HashEntry<N>>,
    /// Signatures with size `*`, sorted by digest; their `size` field is unused.
    any_size: Vec<HashEntry<N>>,
}

impl<const N: usize> HashTable<N> {
    fn insert(&mut self, size: Option<u32>, digest: [u8; N], name: NameId) {
        match size {
            Some(size) => self.sized.push(HashEntry { size, digest, name }),
            None => self.any_size.push(HashEntry {
                size: 0,
                digest,
                name,
            }),
        }
    }

    /// Sorts, drops duplicate (size, digest) pairs (the first name wins) and frees spare capacity.
    fn finish(&mut self) {
        self.sized.sort_unstable_by_key(|a| (a.size, a.digest));
        self.sized
            .dedup_by(|b, a| a.size == b.size && a.digest == b.digest);
        self.sized.shrink_to_fit();
        self.any_size.sort_unstable_by_key(|a| a.digest);
        self.any_size.dedup_by(|b, a| a.digest == b.digest);
        self.any_size.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.sized.len() + self.any_size.len()
    }

    /// Whether a buffer of `size` bytes must be hashed at all.
    fn wants(&self, size: usize) -> bool {
        if !self.any_size.is_empty() {
            return true;
        }
        let Ok(size) = u32::try_from(size) else {
            return false;
        };
        let at = self.sized.partition_point(|e| e.size < size);
        self.sized.get(at).is_some_and(|e| e.size == size)
    }

    fn lookup(&self, size: usize, digest: &[u8; N]) -> Option<NameId> {
        if let Ok(size) = u32::try_from(size)
            && let Ok(i) = self
                .sized
                .binary_search_by(|e| (e.size, &e.digest).cmp(&(size, digest)))
        {
            return Some(self.sized[i].name);
        }
        self.any_size
            .binary_search_by(|e| e.digest.cmp(digest))
            .ok()
            .map(|i| self.any_size[i].name)
    }

    fn heap_bytes(&self) -> usize {
        (self.sized.capacity() + self.any_size.capacity()) * std::mem::size_of::<HashEntry<N>>()
    }
}

/// A set of hash signatures of all three algorithms (whole files, or PE sections).
#[derive(Debug, Default)]
pub(crate) struct HashSet3 {
    md5: HashTable<16>,
    sha1: HashTable<20>,
    sha256: HashTable<32>,
}

/// A parsed digest, ready to insert.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ParsedDigest {
    Md5([u8; 16]),
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl ParsedDigest {
    /// Parses a hex digest whose length selects the algorithm.
    pub(crate) fn from_hex(text: &str) -> Result<ParsedDigest, String> {
        let kind = HashKind::from_hex_len(text.len()).ok_or_else(|| {
            format!(
                "hash has {} hex digits; expected 32 (MD5), 40 (SHA-1) or 64 (SHA-256)",
                text.len()
            )
        })?;
        let bad = |_| format!("hash {text:?} is not hexadecimal");
        Ok(match kind {
            HashKind::Md5 => {
                let mut d = [0u8; 16];
                hex::decode_to_slice(text, &mut d).map_err(bad)?;
                ParsedDigest::Md5(d)
            }
            HashKind::Sha1 => {
                let mut d = [0u8; 20];
                hex::decode_to_slice(text, &mut d).map_err(bad)?;
                ParsedDigest::Sha1(d)
            }
            HashKind::Sha256 => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(text, &mut d).map_err(bad)?;
                ParsedDigest::Sha256(d)
            }
        })
    }

    #[cfg(test)]
    pub(crate) fn kind(&self) -> HashKind {
        match self {
            ParsedDigest::Md5(_) => HashKind::Md5,
            ParsedDigest::Sha1(_) => HashKind::Sha1,
            ParsedDigest::Sha256(_) => HashKind::Sha256,
        }
    }
}

impl HashSet3 {
    pub(crate) fn insert(&mut self, size: Option<u32>, digest: ParsedDigest, name: NameId) {
        match digest {
            ParsedDigest::Md5(d) => self.md5.insert(size, d, name),
            ParsedDigest::Sha1(d) => self.sha1.insert(size, d, name),
            ParsedDigest::Sha256(d) => self.sha256.insert(size, d, name),
        }
    }

    pub(crate) fn finish(&mut self) {
        self.md5.finish();
        self.sha1.finish();
        self.sha256.finish();
    }

    pub(crate) fn len(&self) -> usize {
        self.md5.len() + self.sha1.len() + self.sha256.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.md5.heap_bytes() + self.sha1.heap_bytes() + self.sha256.heap_bytes()
    }

    /// Every signature matching `data`, each algorithm computed at most once and only if needed.
    pub(crate) fn matches(&self, data: &[u8], found: &mut Vec<(HashKind, NameId)>) {
        let size = data.len();
        if self.md5.wants(size) {
            let digest: [u8; 16] = Md5::digest(data).into();
            if let Some(name) = self.md5.lookup(size, &digest) {
                found.push((HashKind::Md5, name));
            }
        }
        if self.sha1.wants(size) {
            let digest: [u8; 20] = Sha1::digest(data).into();
            if let Some(name) = self.sha1.lookup(size, &digest) {
                found.push((HashKind::Sha1, name));
            }
        }
        if self.sha256.wants(size) {
            let digest: [u8; 32] = Sha256::digest(data).into();
            if let Some(name) = self.sha256.lookup(size, &digest) {
                found.push((HashKind::Sha256, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_signature_matches_only_its_size_and_digest() {
        let mut set = HashSet3::default();
        let digest: [u8; 16] = Md5::digest(b"hello").into();
        set.insert(Some(5), ParsedDigest::Md5(digest), 7);
        set.finish();
        let mut found = Vec::new();
        set.matches(b"hello", &mut found);
        assert_eq!(found, vec![(HashKind::Md5, 7)]);
        found.clear();
        set.matches(b"hellO", &mut found);
        assert!(found.is_empty());
    }

    #[test]
    fn buffer_of_unlisted_size_is_not_hashed() {
        let mut table = HashTable::<16>::default();
        table.insert(Some(10), [0; 16], 0);
        table.insert(Some(30), [0; 16], 0);
        table.finish();
        assert!(table.wants(10));
        assert!(!table.wants(20));
        assert!(!table.wants(usize::MAX));
    }

    #[test]
    fn any_size_signature_matches_whatever_the_size() {
        let mut set = HashSet3::default();
        let digest: [u8; 32] = Sha256::digest(b"payload").into();
        set.insert(None, ParsedDigest::Sha256(digest), 3);
        set.finish();
        let mut found = Vec::new();
        set.matches(b"payload", &mut found);
        assert_eq!(found, vec![(HashKind::Sha256, 3)]);
    }

    #[test]
    fn digest_length_selects_the_algorithm_and_garbage_is_refused() {
        assert_eq!(
            ParsedDigest::from_hex(&"a".repeat(40)).unwrap().kind(),
            HashKind::Sha1
        );
        assert!(ParsedDigest::from_hex(&"a".repeat(33)).is_err());
        assert!(ParsedDigest::from_hex(&"z".repeat(32)).is_err());
    }
}
