//! Byte-pattern signatures (a subset of ClamAV's .ndb body syntax) and their matcher.
//!
//! Each pattern is split into fixed-length *segments* separated by gaps. The longest run of
//! fixed bytes of each pattern (at most [`MAX_ANCHOR`] bytes of it) goes into one Aho-Corasick
//! automaton, so the whole set is searched in one pass; only when that literal is found is the
//! rest of the pattern verified around it. Verification work is bounded per scan (a hostile file
//! full of anchor hits cannot make a scan run forever), see [`Budget`].

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::AvError;
use crate::names::NameId;

/// The longest literal fed to the automaton. Longer literals only add automaton states: the
/// rest of the pattern is checked during verification anyway.
const MAX_ANCHOR: usize = 8;

/// Patterns need at least this many consecutive fixed bytes; shorter anchors would hit on almost
/// every position of every file (ClamAV refuses such patterns too).
const MIN_ANCHOR: usize = 2;

/// More segments than this make a pattern too expensive to verify; it is refused at load time.
const MAX_SEGMENTS: usize = 64;

/// Gap bound meaning "any number of bytes" (`*`).
const UNBOUNDED: u32 = u32::MAX;

/// Where in the file a pattern must start (the ClamAV offset field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offset {
    /// `*`: anywhere.
    Any,
    /// `n` or `n,m`: from byte `start` to `start + shift`.
    Absolute { start: u32, shift: u32 },
    /// `EOF-n` or `EOF-n,m`: from `len - back` to `len - back + shift`.
    FromEnd { back: u32, shift: u32 },
}

impl Offset {
    /// Parses the offset field; `Err` carries the reason the line is skipped.
    pub(crate) fn parse(text: &str) -> Result<Offset, Refusal> {
        if text == "*" {
            return Ok(Offset::Any);
        }
        let (base, shift) = match text.split_once(',') {
            Some((base, shift)) => (
                base,
                shift.parse::<u32>().map_err(|_| {
                    Refusal::Malformed(format!("offset shift {shift:?} is not a number"))
                })?,
            ),
            None => (text, 0),
        };
        if let Some(back) = base.strip_prefix("EOF-") {
            let back = back
                .parse::<u32>()
                .map_err(|_| Refusal::Malformed(format!("offset {text:?} is not EOF-<number>")))?;
            return Ok(Offset::FromEnd { back, shift });
        }
        if let Ok(start) = base.parse::<u32>() {
            return Ok(Offset::Absolute { start, shift });
        }
        if ["EP", "S", "SL", "SE", "VI", "$"]
            .iter()
            .any(|p| base.starts_with(p))
        {
            return Err(Refusal::Unsupported(format!(
                "offset {text:?} (entry-point, section and macro offsets are not supported)"
            )));
        }
        Err(Refusal::Malformed(format!(
            "offset {text:?} is not understood"
        )))
    }

    fn accepts(self, start: usize, len: usize) -> bool {
        let window = |base: usize, shift: u32| start >= base && start - base <= shift as usize;
        match self {
            Offset::Any => true,
            Offset::Absolute { start: base, shift } => window(base as usize, shift),
            Offset::FromEnd { back, shift } => len
                .checked_sub(back as usize)
                .is_some_and(|base| window(base, shift)),
        }
    }
}

/// The file types a pattern applies to (ClamAV target types we can recognise from raw bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// 0: any file.
    Any,
    /// 1: PE executables.
    Pe,
    /// 6: ELF executables.
    Elf,
    /// 9: Mach-O executables.
    MachO,
    /// 10: PDF documents.
    Pdf,
}

impl Target {
    pub(crate) fn parse(text: &str) -> Result<Target, Refusal> {
        match text {
            "0" => Ok(Target::Any),
            "1" => Ok(Target::Pe),
            "6" => Ok(Target::Elf),
            "9" => Ok(Target::MachO),
            "10" => Ok(Target::Pdf),
            other if other.parse::<u32>().is_ok() => Err(Refusal::Unsupported(format!(
                "target type {other} (only 0 any, 1 PE, 6 ELF, 9 Mach-O and 10 PDF are supported; \
                 the others need normalised or extracted content)"
            ))),
            other => Err(Refusal::Malformed(format!(
                "target type {other:?} is not a number"
            ))),
        }
    }

    fn accepts(self, traits: &FileTraits) -> bool {
        match self {
            Target::Any => true,
            Target::Pe => traits.pe,
            Target::Elf => traits.elf,
            Target::MachO => traits.macho,
            Target::Pdf => traits.pdf,
        }
    }
}

/// What kind of file a buffer is, computed once per scan for target-type checks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FileTraits {
    pub(crate) pe: bool,
    pub(crate) elf: bool,
    pub(crate) macho: bool,
    pub(crate) pdf: bool,
}

impl FileTraits {
    pub(crate) fn of(data: &[u8]) -> FileTraits {
        let head = &data[..data.len().min(1024)];
        FileTraits {
            pe: crate::pe::is_pe(data),
            elf: data.starts_with(b"\x7fELF"),
            macho: crate::pe::is_macho(data),
            pdf: head.windows(5).any(|w| w == b"%PDF-"),
        }
    }
}

/// Why a signature line is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed(String),
    Unsupported(String),
}

/// One fixed-length piece of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    /// Bytes with masks: 0xff exact, 0x00 `??`, 0xf0/0x0f nibble wildcards.
    Bytes { values: Vec<u8>, masks: Vec<u8> },
    /// `(aa|bb)` or `!(aa|bb)`: one of (or none of) several equal-length byte strings.
    Alternatives {
        options: Vec<Vec<u8>>,
        negated: bool,
    },
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Bytes { values, .. } => values.len(),
            Piece::Alternatives { options, .. } => options.first().map_or(0, Vec::len),
        }
    }
}

/// A piece and the gap (in bytes) allowed before it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParsedSegment {
    gap_min: u32,
    gap_max: u32,
    piece: Piece,
}

/// Parses a ClamAV hex signature body into segments.
fn parse_hex_signature(text: &str) -> Result<Vec<ParsedSegment>, Refusal> {
    let bytes = text.as_bytes();
    let mut segments: Vec<ParsedSegment> = Vec::new();
    // The gap collected since the last piece; `None` means the next piece is adjacent.
    let mut pending_gap: Option<(u32, u32)> = None;
    let mut i = 0;

    let add_gap = |pending: &mut Option<(u32, u32)>, min: u32, max: u32| {
        let (old_min, old_max) = pending.unwrap_or((0, 0));
        let max = if old_max == UNBOUNDED || max == UNBOUNDED {
            UNBOUNDED
        } else {
            old_max.saturating_add(max).min(UNBOUNDED - 1)
        };
        *pending = Some((old_min.saturating_add(min).min(UNBOUNDED - 1), max));
    };

    while i < bytes.len() {
        match bytes[i] {
            b'*' => {
                add_gap(&mut pending_gap, 0, UNBOUNDED);
                i += 1;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == close)
                    .ok_or_else(|| Refusal::Malformed(format!("unclosed {:?}", open as char)))?;
                let inner = &text[i + 1..i + end];
                let (min, max) = parse_gap(inner)?;
                add_gap(&mut pending_gap, min, max);
                i += end + 1;
            }
            b'!' | b'(' => {
                let negated = bytes[i] == b'!';
                let start = if negated { i + 1 } else { i };
                if bytes.get(start) != Some(&b'(') {
                    return Err(Refusal::Malformed("'!' must be followed by '('".into()));
                }
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == b')')
                    .ok_or_else(|| Refusal::Malformed("unclosed '('".into()))?;
                let inner = &text[start + 1..start + end];
                let piece = parse_alternatives(inner, negated)?;
                push_piece(&mut segments, &mut pending_gap, piece);
                i = start + end + 1;
            }
            _ => {
                let pair = bytes
                    .get(i..i + 2)
                    .ok_or_else(|| Refusal::Malformed("odd number of hex digits".into()))?;
                let (value, mask) = parse_hex_pair(pair)?;
                let piece = Piece::Bytes {
                    values: vec![value],
                    masks: vec![mask],
                };
                push_piece(&mut segments, &mut pending_gap, piece);
                i += 2;
            }
        }
    }
    if pending_gap.is_some() {
        return Err(Refusal::Malformed("pattern ends with a gap".into()));
    }
    if segments.is_empty() {
        return Err(Refusal::Malformed("empty pattern".into()));
    }
    if segments.len() > MAX_SEGMENTS {
        return Err(Refusal::Unsupported(format!(
            "pattern has {} parts; at most {MAX_SEGMENTS} are supported",
            segments.len()
        )));
    }
    Ok(segments)
}

/// Appends a piece, merging adjacent byte runs into one segment.
fn push_piece(
    segments: &mut Vec<ParsedSegment>,
    pending_gap: &mut Option<(u32, u32)>,
    piece: Piece,
) {
    match pending_gap.take() {
        Some((gap_min, gap_max)) => segments.push(ParsedSegment {
            gap_min,
            gap_max,
            piece,
        }),
        None => {
            if let (
                Some(ParsedSegment {
                    piece: Piece::Bytes { values, masks },
                    ..
                }),
                Piece::Bytes {
                    values: new_values,
                    masks: new_masks,
                },
            ) = (segments.last_mut(), &piece)
            {
                values.extend_from_slice(new_values);
                masks.extend_from_slice(new_masks);
                return;
            }
            segments.push(ParsedSegment {
                gap_min: 0,
                gap_max: 0,
                piece,
            });
        }
    }
}

fn parse_gap(inner: &str) -> Result<(u32, u32), Refusal> {
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n < UNBOUNDED)
            .ok_or_else(|| Refusal::Malformed(format!("gap {{{inner}}} is not understood")))
    };
    match inner.split_once('-') {
        None => {
            let n = number(inner)?;
            Ok((n, n))
        }
        Some(("", max)) => Ok((0, number(max)?)),
        Some((min, "")) => Ok((number(min)?, UNBOUNDED)),
        Some((min, max)) => {
            let (min, max) = (number(min)?, number(max)?);
            if min > max {
                return Err(Refusal::Malformed(format!("gap {{{inner}}} has min > max")));
            }
            Ok((min, max))
        }
    }
}

fn parse_alternatives(inner: &str, negated: bool) -> Result<Piece, Refusal> {
    if matches!(inner, "B" | "L" | "W") {
        return Err(Refusal::Unsupported(format!("boundary anchor ({inner})")));
    }
    let mut options = Vec::new();
    for option in inner.split('|') {
        if option.is_empty() || option.len() % 2 != 0 {
            return Err(Refusal::Malformed(format!(
                "alternative {option:?} is not whole bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(option.len() / 2);
        for pair in option.as_bytes().chunks(2) {
            let (value, mask) = parse_hex_pair(pair)?;
            if mask != 0xff {
                return Err(Refusal::Unsupported("wildcards inside alternatives".into()));
            }
            bytes.push(value);
        }
        options.push(bytes);
    }
    if options.iter().any(|o| o.len() != options[0].len()) {
        return Err(Refusal::Unsupported(
            "alternatives of different lengths (generic alternatives)".into(),
        ));
    }
    Ok(Piece::Alternatives { options, negated })
}

fn parse_hex_pair(pair: &[u8]) -> Result<(u8, u8), Refusal> {
    let nibble = |c: u8| -> Result<(u8, u8), Refusal> {
        match c {
            b'?' => Ok((0, 0)),
            b'0'..=b'9' => Ok((c - b'0', 0xf)),
            b'a'..=b'f' => Ok((c - b'a' + 10, 0xf)),
            b'A'..=b'F' => Ok((c - b'A' + 10, 0xf)),
            _ => Err(Refusal::Malformed(format!(
                "{:?} is not a hex digit",
                c as char
            ))),
        }
    };
    let (hi, hi_mask) = nibble(pair[0])?;
    let (lo, lo_mask) = nibble(pair[1])?;
    Ok(((hi << 4) | lo, (hi_mask << 4) | lo_mask))
}

/// A compiled segment: where its bytes live in the arenas and the gap before it.
#[derive(Clone, Copy, Debug)]
struct Segment {
    gap_min: u32,
    gap_max: u32,
    kind: SegmentKind,
}

#[derive(Clone, Copy, Debug)]
enum SegmentKind {
    /// `len` bytes at `start` in `values`/`masks`.
    Bytes { start: u32, len: u32 },
    /// `count` options of `len` bytes each at `start` in `alternatives`.
    Alternatives {
        start: u32,
        len: u16,
        count: u16,
        negated: bool,
    },
}

impl Segment {
    fn len(&self) -> usize {
        match self.kind {
            SegmentKind::Bytes { len, .. } => len as usize,
            SegmentKind::Alternatives { len, .. } => len as usize,
        }
    }
}

/// A compiled pattern.
#[derive(Clone, Copy, Debug)]
struct Pattern {
    name: NameId,
    first_segment: u32,
    segment_count: u32,
    /// The segment holding the automaton literal and the literal's byte offset inside it.
    anchor_segment: u32,
    anchor_offset: u32,
    offset: Offset,
    target: Target,
}

/// Verification work left for one scan, counted in candidate positions tried.
#[derive(Debug)]
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    pub(crate) fn new(steps: u64) -> Budget {
        Budget { left: steps }
    }

    /// Takes one step; false once the budget is spent.
    fn spend(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.left == 0
    }
}

/// Builds a [`PatternSet`].
#[derive(Debug, Default)]
pub(crate) struct PatternSetBuilder {
    set: PatternSet,
    literal_ids: HashMap<Vec<u8>, u32>,
    literals: Vec<Vec<u8>>,
    /// (literal id, pattern id)
    owners: Vec<(u32, u32)>,
}

impl PatternSetBuilder {
    /// Parses and adds a pattern; `Err` says why the line is skipped.
    pub(crate) fn add(
        &mut self,
        name: NameId,
        target: Target,
        offset: Offset,
        hex: &str,
    ) -> Result<(), Refusal> {
        let parsed = parse_hex_signature(hex)?;
        let (anchor_segment, anchor_offset, literal) = choose_anchor(&parsed).ok_or_else(|| {
            Refusal::Unsupported(format!(
                "no run of {MIN_ANCHOR} fixed bytes to search for (pure wildcard patterns are too slow)"
            ))
        })?;
        self.add_parsed(
            name,
            target,
            offset,
            &parsed,
            anchor_segment,
            anchor_offset,
            literal,
        )
    }

    /// Adds a pattern that is exactly `literal` (EICAR and other built-ins).
    pub(crate) fn add_literal(&mut self, name: NameId, literal: &[u8]) -> Result<(), Refusal> {
        let parsed = vec![ParsedSegment {
            gap_min: 0,
            gap_max: 0,
            piece: Piece::Bytes {
                values: literal.to_vec(),
                masks: vec![0xff; literal.len()],
            },
        }];
        let anchor = literal[..literal.len().min(MAX_ANCHOR)].to_vec();
        if anchor.len() < MIN_ANCHOR {
            return Err(Refusal::Malformed("literal too short".into()));
        }
        self.add_parsed(name, Target::Any, Offset::Any, &parsed, 0, 0, anchor)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_parsed(
        &mut self,
        name: NameId,
        target: Target,
        offset: Offset,
        parsed: &[ParsedSegment],
        anchor_segment: usize,
        anchor_offset: usize,
        literal: Vec<u8>,
    ) -> Result<(), Refusal> {
        let too_big = || Refusal::Unsupported("signature set exceeds 4 GiB of pattern data".into());
        let set = &mut self.set;
        let pattern_id = u32::try_from(set.patterns.len()).map_err(|_| too_big())?;
        let first_segment = u32::try_from(set.segments.len()).map_err(|_| too_big())?;
        for segment in parsed {
            let kind = match &segment.piece {
                Piece::Bytes { values, masks } => {
                    let start = u32::try_from(set.values.len()).map_err(|_| too_big())?;
                    set.values.extend_from_slice(values);
                    set.masks.extend_from_slice(masks);
                    SegmentKind::Bytes {
                        start,
                        len: u32::try_from(values.len()).map_err(|_| too_big())?,
                    }
                }
                Piece::Alternatives { options, negated } => {
                    let start = u32::try_from(set.alternatives.len()).map_err(|_| too_big())?;
                    let len = u16::try_from(segment.piece.len()).map_err(|_| {
                        Refusal::Unsupported("alternative longer than 64 KiB".into())
                    })?;
                    let count = u16::try_from(options.len())
                        .map_err(|_| Refusal::Unsupported("more than 65535 alternatives".into()))?;
                    for option in options {
                        set.alternatives.extend_from_slice(option);
                    }
                    SegmentKind::Alternatives {
                        start,
                        len,
                        count,
                        negated: *negated,
                    }
                }
            };
            set.segments.push(Segment {
                gap_min: segment.gap_min,
                gap_max: segment.gap_max,
                kind,
            });
        }
        set.patterns.push(Pattern {
            name,
            first_segment,
            segment_count: parsed.len() as u32,
            anchor_segment: anchor_segment as u32,
            anchor_offset: anchor_offset as u32,
            offset,
            target,
        });
        let next_literal = self.literals.len() as u32;
        let literal_id = *self.literal_ids.entry(literal.clone()).or_insert_with(|| {
            self.literals.push(literal);
            next_literal
        });
        self.owners.push((literal_id, pattern_id));
        Ok(())
    }

    /// Builds the automaton and the literal → patterns index.
    pub(crate) fn build(mut self) -> Result<PatternSet, AvError> {
        let mut set = self.set;
        if !self.literals.is_empty() {
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                // Dense states cost 1 KiB each; beyond the root's children they would make a
                // 100,000-pattern automaton 60 MB instead of 9 MB for no measurable speed gain.
                .dense_depth(1)
                .build(&self.literals)
                .map_err(|e| AvError::Automaton {
                    patterns: self.literals.len(),
                    reason: e.to_string(),
                })?;
            set.automaton = Some(automaton);
        }
        self.owners.sort_unstable();
        let mut owner_starts = Vec::with_capacity(self.literals.len() + 1);
        let mut at = 0usize;
        for literal in 0..self.literals.len() as u32 {
            owner_starts.push(at as u32);
            while self.owners.get(at).is_some_and(|&(l, _)| l == literal) {
                at += 1;
            }
        }
        owner_starts.push(at as u32);
        set.owner_starts = owner_starts;
        set.owners = self.owners.into_iter().map(|(_, p)| p).collect();
        set.patterns.shrink_to_fit();
        set.segments.shrink_to_fit();
        set.values.shrink_to_fit();
        set.masks.shrink_to_fit();
        set.alternatives.shrink_to_fit();
        Ok(set)
    }
}

/// Picks the longest run of fixed bytes (capped at [`MAX_ANCHOR`]) as the automaton literal.
fn choose_anchor(parsed: &[ParsedSegment]) -> Option<(usize, usize, Vec<u8>)> {
    let mut best: Option<(usize, usize, usize)> = None; // (segment, offset, len)
    for (index, segment) in parsed.iter().enumerate() {
        let Piece::Bytes { values: _, masks } = &segment.piece else {
            continue;
        };
        let mut run_start = 0;
        for position in 0..=masks.len() {
            let fixed = masks.get(position) == Some(&0xff);
            if !fixed {
                let len = position - run_start;
                if best.is_none_or(|(_, _, best_len)| len > best_len) && len >= MIN_ANCHOR {
                    best = Some((index, run_start, len));
                }
                run_start = position + 1;
            }
        }
    }
    let (index, offset, len) = best?;
    let Piece::Bytes { values, .. } = &parsed[index].piece else {
        return None;
    };
    let len = len.min(MAX_ANCHOR);
    Some((index, offset, values[offset..offset + len].to_vec()))
}

/// All byte-pattern signatures of an engine.
#[derive(Debug, Default)]
pub(crate) struct PatternSet {
    automaton: Option<AhoCorasick>,
    /// Patterns owning literal `l` are `owners[owner_starts[l]..owner_starts[l + 1]]`.
    owner_starts: Vec<u32>,
    owners: Vec<u32>,
    patterns: Vec<Pattern>,
    segments: Vec<Segment>,
    values: Vec<u8>,
    masks: Vec<u8>,
    alternatives: Vec<u8>,
}

impl PatternSet {
    pub(crate) fn len(&self) -> usize {
        self.patterns.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.automaton.as_ref().map_or(0, AhoCorasick::memory_usage)
            + self.owner_starts.capacity() * 4
            + self.owners.capacity() * 4
            + self.patterns.capacity() * std::mem::size_of::<Pattern>()
            + self.segments.capacity() * std::mem::size_of::<Segment>()
            + self.values.capacity()
            + self.masks.capacity()
            + self.alternatives.capacity()
    }

    /// Appends the names of all patterns found in `data` (each at most once).
    pub(crate) fn matches(&self, data: &[u8], budget: &mut Budget, found: &mut Vec<NameId>) {
        let Some(automaton) = &self.automaton else {
            return;
        };
        let traits = FileTraits::of(data);
        let mut done: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for hit in automaton.find_overlapping_iter(data) {
            let literal = hit.pattern().as_usize();
            let (Some(&from), Some(&to)) = (
                self.owner_starts.get(literal),
                self.owner_starts.get(literal + 1),
            ) else {
                continue;
            };
            for &pattern_id in self.owners.get(from as usize..to as usize).unwrap_or(&[]) {
                if done.contains(&pattern_id) {
                    continue;
                }
                let Some(pattern) = self.patterns.get(pattern_id as usize) else {
                    continue;
                };
                if !pattern.target.accepts(&traits) {
                    continue;
                }
                let Some(segment_start) = hit.start().checked_sub(pattern.anchor_offset as usize)
                else {
                    continue;
                };
                if self.verify(pattern, segment_start, data, budget) {
                    done.insert(pattern_id);
                    found.push(pattern.name);
                }
                if budget.exhausted() {
                    return;
                }
            }
        }
    }

    fn segments_of(&self, pattern: &Pattern) -> &[Segment] {
        let start = pattern.first_segment as usize;
        self.segments
            .get(start..start + pattern.segment_count as usize)
            .unwrap_or(&[])
    }

    fn verify(
        &self,
        pattern: &Pattern,
        anchor_start: usize,
        data: &[u8],
        budget: &mut Budget,
    ) -> bool {
        let segments = self.segments_of(pattern);
        let k = pattern.anchor_segment as usize;
        let Some(anchor) = segments.get(k) else {
            return false;
        };
        if !budget.spend() || !self.segment_at(anchor, data, anchor_start) {
            return false;
        }
        self.forward(segments, k + 1, anchor_start + anchor.len(), data, budget)
            && self.backward(segments, k, anchor_start, data, pattern.offset, budget)
    }

    /// Whether segments `i..` can be placed after position `pos`.
    fn forward(
        &self,
        segments: &[Segment],
        i: usize,
        pos: usize,
        data: &[u8],
        budget: &mut Budget,
    ) -> bool {
        let Some(segment) = segments.get(i) else {
            return true;
        };
        let len = segment.len();
        let Some(last_start) = data.len().checked_sub(len) else {
            return false;
        };
        let lo = pos.saturating_add(segment.gap_min as usize);
        let hi = if segment.gap_max == UNBOUNDED {
            last_start
        } else {
            pos.saturating_add(segment.gap_max as usize).min(last_start)
        };
        let mut q = lo;
        while q <= hi {
            if !budget.spend() {
                return false;
            }
            if self.segment_at(segment, data, q)
                && self.forward(segments, i + 1, q + len, data, budget)
            {
                return true;
            }
            q += 1;
        }
        false
    }

    /// Whether segments `..i` can be placed before segment `i` at `pos`, with the pattern start
    /// satisfying the offset.
    fn backward(
        &self,
        segments: &[Segment],
        i: usize,
        pos: usize,
        data: &[u8],
        offset: Offset,
        budget: &mut Budget,
    ) -> bool {
        if i == 0 {
            return offset.accepts(pos, data.len());
        }
        let gap_min = segments[i].gap_min as usize;
        let gap_max = segments[i].gap_max;
        let previous = &segments[i - 1];
        let len = previous.len();
        let Some(hi) = pos.checked_sub(len.saturating_add(gap_min)) else {
            return false;
        };
        let lo = if gap_max == UNBOUNDED {
            0
        } else {
            pos.saturating_sub(len.saturating_add(gap_max as usize))
        };
        let mut q = hi;
        loop {
            if !budget.spend() {
                return false;
            }
            if self.segment_at(previous, data, q)
                && self.backward(segments, i - 1, q, data, offset, budget)
            {
                return true;
            }
            if q == lo {
                return false;
            }
            q -= 1;
        }
    }

    /// Whether one segment matches at `pos` (false if it would run past the end).
    fn segment_at(&self, segment: &Segment, data: &[u8], pos: usize) -> bool {
        let Some(window) = data.get(pos..pos.saturating_add(segment.len())) else {
            return false;
        };
        if window.len() != segment.len() {
            return false;
        }
        match segment.kind {
            SegmentKind::Bytes { start, len } => {
                let range = start as usize..start as usize + len as usize;
                let (Some(values), Some(masks)) =
                    (self.values.get(range.clone()), self.masks.get(range))
                else {
                    return false;
                };
                window
                    .iter()
                    .zip(values)
                    .zip(masks)
                    .all(|((&b, &v), &m)| b & m == v & m)
            }
            SegmentKind::Alternatives {
                start,
                len,
                count,
                negated,
            } => {
                let len = len as usize;
                let total = len * count as usize;
                let Some(options) = self
                    .alternatives
                    .get(start as usize..start as usize + total)
                else {
                    return false;
                };
                let any = options.chunks(len.max(1)).any(|option| option == window);
                any != negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(patterns: &[(&str, &str, &str)]) -> PatternSet {
        let mut builder = PatternSetBuilder::default();
        for (i, (target, offset, hex)) in patterns.iter().enumerate() {
            builder
                .add(
                    i as NameId,
                    Target::parse(target).unwrap(),
                    Offset::parse(offset).unwrap(),
                    hex,
                )
                .unwrap();
        }
        builder.build().unwrap()
    }

    fn found(set: &PatternSet, data: &[u8]) -> Vec<NameId> {
        let mut out = Vec::new();
        set.matches(data, &mut Budget::new(1_000_000), &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn plain_hex_pattern_matches_anywhere() {
        let set = set_of(&[("0", "*", "68656c6c6f")]);
        assert_eq!(found(&set, b"say hello world"), vec![0]);
        assert!(found(&set, b"say hallo world").is_empty());
    }

    #[test]
    fn wildcard_bytes_and_nibbles_match_any_value() {
        let set = set_of(&[("0", "*", "6162??64"), ("0", "*", "78793?")]);
        assert_eq!(found(&set, b"abXd"), vec![0]);
        assert_eq!(found(&set, b"xy5"), vec![1]);
        assert!(found(&set, b"xyA").is_empty());
    }

    #[test]
    fn star_gap_spans_any_distance() {
        let set = set_of(&[("0", "*", "6161*6262")]);
        assert_eq!(found(&set, b"aa.........................bb"), vec![0]);
        assert!(found(&set, b"bb....aa").is_empty());
    }

    #[test]
    fn bounded_gap_enforces_its_limits() {
        let set = set_of(&[("0", "*", "6161{2-4}6262")]);
        assert!(found(&set, b"aa.bb").is_empty());
        assert_eq!(found(&set, b"aa..bb"), vec![0]);
        assert_eq!(found(&set, b"aa....bb"), vec![0]);
        assert!(found(&set, b"aa.....bb").is_empty());
    }

    #[test]
    fn open_ended_and_exact_gaps_are_understood() {
        let set = set_of(&[
            ("0", "*", "6161{3}6262"),
            ("0", "*", "6363{-1}6464"),
            ("0", "*", "6565{2-}6666"),
        ]);
        assert_eq!(found(&set, b"aa...bb"), vec![0]);
        assert_eq!(found(&set, b"ccdd"), vec![1]);
        assert_eq!(found(&set, b"ee..........ff"), vec![2]);
        assert!(found(&set, b"ee.ff").is_empty());
    }

    #[test]
    fn alternatives_and_negated_alternatives_match_as_documented() {
        let set = set_of(&[
            ("0", "*", "6161(62|63)6464"),
            ("0", "*", "7878!(79|7a)7878"),
        ]);
        assert_eq!(found(&set, b"aacdd"), vec![0]);
        assert!(found(&set, b"aaxdd").is_empty());
        assert_eq!(found(&set, b"xxqxx"), vec![1]);
        assert!(found(&set, b"xxyxx").is_empty());
    }

    #[test]
    fn anchor_in_a_later_segment_still_checks_earlier_ones() {
        let set = set_of(&[("0", "*", "41*4243444546474849")]);
        assert_eq!(found(&set, b"A...BCDEFGHI"), vec![0]);
        assert!(found(&set, b"...BCDEFGHI").is_empty());
    }

    #[test]
    fn absolute_offset_and_shift_restrict_the_start() {
        let set = set_of(&[("0", "2", "6161"), ("0", "2,3", "6262")]);
        assert_eq!(found(&set, b"..aa"), vec![0]);
        assert!(found(&set, b"...aa").is_empty());
        assert_eq!(found(&set, b".....bb"), vec![1]);
        assert!(found(&set, b"......bb").is_empty());
    }

    #[test]
    fn eof_offset_counts_from_the_end() {
        let set = set_of(&[("0", "EOF-4", "7a7a")]);
        assert_eq!(found(&set, b"....zz.."), vec![0]);
        assert!(found(&set, b"....zz...").is_empty());
        assert!(found(&set, b"zz").is_empty());
    }

    #[test]
    fn target_type_limits_patterns_to_that_file_kind() {
        let set = set_of(&[("6", "*", "6d616c")]);
        assert_eq!(found(&set, b"\x7fELF....mal"), vec![0]);
        assert!(found(&set, b"plain text mal").is_empty());
    }

    #[test]
    fn malformed_and_unsupported_bodies_are_refused_with_a_reason() {
        let refused = |hex: &str| {
            let mut builder = PatternSetBuilder::default();
            builder.add(0, Target::Any, Offset::Any, hex).unwrap_err()
        };
        assert!(matches!(refused("6161*"), Refusal::Malformed(_)));
        assert!(matches!(refused("616"), Refusal::Malformed(_)));
        assert!(matches!(refused("61zz"), Refusal::Malformed(_)));
        assert!(matches!(refused("6161{5-2}6262"), Refusal::Malformed(_)));
        assert!(matches!(refused("6161(62|6363)"), Refusal::Unsupported(_)));
        assert!(matches!(refused("6161(B)6262"), Refusal::Unsupported(_)));
        assert!(matches!(refused("??61??"), Refusal::Unsupported(_)));
        assert!(matches!(refused("6161{3"), Refusal::Malformed(_)));
        assert!(matches!(
            Offset::parse("EP+10"),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(Target::parse("3"), Err(Refusal::Unsupported(_))));
    }

    #[test]
    fn hostile_input_exhausts_the_budget_instead_of_running_forever() {
        let set = set_of(&[("0", "*", "6161*6262*6363*6464")]);
        let data = vec![b'a'; 100_000];
        let mut budget = Budget::new(10_000);
        let mut out = Vec::new();
        set.matches(&data, &mut budget, &mut out);
        assert!(budget.exhausted());
        assert!(out.is_empty());
    }
}
