//! Signature names, stored compactly: a million signatures cost a few allocations, not a million.
//!
//! ClamAV names are `Family-Number-Revision` ("Win.Trojan.Agent-6383497-0"), and thousands of
//! signatures share a family, so the part before the first `-` is stored once and each name keeps
//! only its short suffix. That roughly halves the memory names take.

use std::collections::HashMap;

/// Index of a signature name in a [`NameTable`].
pub(crate) type NameId = u32;

/// All signature names of an engine.
#[derive(Debug, Default)]
pub(crate) struct NameTable {
    /// Distinct family prefixes.
    families: Vec<String>,
    /// Family → index, only while loading.
    family_index: HashMap<String, u32>,
    /// Per name: (family index, end of its suffix in `suffixes`).
    entries: Vec<(u32, u32)>,
    suffixes: String,
}

impl NameTable {
    /// Stores `name` and returns its id; `None` when the table would exceed 4 GiB.
    ///
    /// A name equal to the previous one reuses its id (several hashes of one sample often share
    /// a name).
    pub(crate) fn push(&mut self, name: &str) -> Option<NameId> {
        if let Some(last) = self.entries.len().checked_sub(1) {
            let last = NameId::try_from(last).ok()?;
            if self.parts(last) == split(name) {
                return Some(last);
            }
        }
        let (family, suffix) = split(name);
        let family_id = match self.family_index.get(family) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.families.len()).ok()?;
                self.families.push(family.to_string());
                self.family_index.insert(family.to_string(), id);
                id
            }
        };
        let end = u32::try_from(self.suffixes.len().checked_add(suffix.len())?).ok()?;
        let id = NameId::try_from(self.entries.len()).ok()?;
        self.suffixes.push_str(suffix);
        self.entries.push((family_id, end));
        Some(id)
    }

    fn parts(&self, id: NameId) -> (&str, &str) {
        let index = id as usize;
        let Some(&(family, end)) = self.entries.get(index) else {
            return ("", "");
        };
        let start = if index == 0 {
            0
        } else {
            self.entries[index - 1].1
        };
        let family = self
            .families
            .get(family as usize)
            .map_or("", String::as_str);
        (
            family,
            self.suffixes
                .get(start as usize..end as usize)
                .unwrap_or(""),
        )
    }

    /// The name with this id ("" for an id that was never handed out).
    pub(crate) fn get(&self, id: NameId) -> String {
        let (family, suffix) = self.parts(id);
        let mut name = String::with_capacity(family.len() + suffix.len());
        name.push_str(family);
        name.push_str(suffix);
        name
    }

    /// Drops the loading index and frees spare capacity once loading is over.
    pub(crate) fn shrink(&mut self) {
        self.family_index = HashMap::new();
        self.families.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.suffixes.shrink_to_fit();
    }

    /// Heap bytes used, for the memory estimate.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.families.iter().map(String::capacity).sum::<usize>()
            + self.families.capacity() * std::mem::size_of::<String>()
            + self.entries.capacity() * 8
            + self.suffixes.capacity()
    }
}

/// Splits a name into its family (up to the first `-`) and the rest (starting with the `-`).
fn split(name: &str) -> (&str, &str) {
    match name.find('-') {
        Some(at) => name.split_at(at),
        None => (name, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_returned_by_id_and_repeats_share_an_id() {
        let mut table = NameTable::default();
        let a = table.push("Win.Trojan.Agent-1-0").unwrap();
        let b = table.push("Win.Trojan.Agent-2-0").unwrap();
        let b2 = table.push("Win.Trojan.Agent-2-0").unwrap();
        let c = table.push("Eicar").unwrap();
        assert_eq!(table.get(a), "Win.Trojan.Agent-1-0");
        assert_eq!(table.get(b), "Win.Trojan.Agent-2-0");
        assert_eq!(table.get(c), "Eicar");
        assert_eq!(b, b2);
        assert_eq!(table.families.len(), 2);
        assert_eq!(table.get(99), "");
    }
}
