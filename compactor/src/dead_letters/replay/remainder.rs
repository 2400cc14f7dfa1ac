//! A replay's remainder file R of a dead-letter file F: its name, the
//! decision its header records (which letters of F become rows, and the
//! replay-chain range they take), and the letters it keeps.

use std::collections::{BTreeMap, BTreeSet};

use object_store::path::Path;
use tributary_ingest::replay::Replayed;
use tributary_lake::Lake;
use tributary_lake::dead_letter::{StoredLetter, read_dead_letters};
use tributary_lake::rowfile::RowFile;

use crate::error::{Error, Result};

/// Header key of a remainder file: the dead-letter file it is the
/// remainder of.
pub const META_REPLAY_OF: &str = "tributary.replay.of";

/// Header key of a remainder file: the names of the letters of the file it
/// is the remainder of that were decided to become rows
/// (comma-separated, `<position>` or `<position>.<element>`).
pub const META_REPLAY_LETTERS: &str = "tributary.replay.letters";

/// Header key of a remainder file: the first position of the decided range
/// on the source partition's replay chain.
pub const META_REPLAY_FIRST: &str = "tributary.replay.first";

/// Header key of a remainder file: the last position of the decided range.
pub const META_REPLAY_LAST: &str = "tributary.replay.last";

/// Header key of remainder files written before letters had names: the
/// decided letters' indexes in the file (read only to finish such a file).
pub const META_REPLAY_STAGED: &str = "tributary.replay.staged";

/// A letter's name within its dead-letter file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct LetterId {
    pub(super) position: u64,
    pub(super) element: Option<u64>,
}

impl LetterId {
    pub(super) fn of(letter: &StoredLetter) -> Self {
        Self {
            position: letter.position,
            element: letter.element,
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        let (position, element) = match text.split_once('.') {
            Some((p, e)) => (p, Some(e.parse().ok()?)),
            None => (text, None),
        };
        Some(Self {
            position: position.parse().ok()?,
            element,
        })
    }
}

impl std::fmt::Display for LetterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.element {
            Some(element) => write!(f, "{}.{element}", self.position),
            None => write!(f, "{}", self.position),
        }
    }
}

/// What a replay decided for one file, as its remainder's header records
/// it: the letters that become rows and the replay-chain range they take.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decision {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) letters: Vec<LetterId>,
}

impl Decision {
    pub(super) fn metadata(&self) -> [(String, String); 3] {
        let letters: Vec<String> = self.letters.iter().map(LetterId::to_string).collect();
        [
            (META_REPLAY_FIRST.to_string(), self.first.to_string()),
            (META_REPLAY_LAST.to_string(), self.last.to_string()),
            (META_REPLAY_LETTERS.to_string(), letters.join(",")),
        ]
    }
}

/// What a remainder's header says was decided.
pub(super) enum Decided {
    /// Names and a range (this version).
    Named(Decision),
    /// Indexes into the file, on a chain of the file's own (older
    /// versions).
    Indexed,
}

/// What an earlier run decided for the file `of`, from the header of
/// the remainder it wrote, and whether that carries any letter.
pub(super) async fn decision(lake: &Lake, remainder: &Path, of: &Path) -> Result<(Decided, bool)> {
    let bytes = tributary_lake::read_object(lake.store().as_ref(), remainder).await?;
    let (_, metadata) = RowFile::read_header(&bytes, remainder.as_ref())?;
    let carries = !read_dead_letters(&bytes, remainder.as_ref())?.is_empty();
    let text = |key: &str| {
        metadata
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let corrupt = |problem: String| Error::ReplayCorruptRemainder {
        path: remainder.to_string(),
        problem,
    };
    if text(META_REPLAY_OF).as_deref() != Some(of.as_ref()) {
        return Err(corrupt(format!(
            "it is not the replay remainder of {of} (no {META_REPLAY_OF} naming it)"
        )));
    }
    let Some(letters) = text(META_REPLAY_LETTERS) else {
        if text(META_REPLAY_STAGED).is_some() {
            return Ok((Decided::Indexed, carries));
        }
        return Err(corrupt(format!("no {META_REPLAY_LETTERS} in its header")));
    };
    let position = |key: &str| {
        let value = text(key).unwrap_or_default();
        value
            .parse::<u64>()
            .map_err(|_| corrupt(format!("{key} holds `{value}`")))
    };
    let letters = letters
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            LetterId::parse(s).ok_or_else(|| corrupt(format!("{META_REPLAY_LETTERS} holds `{s}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let decision = Decision {
        first: position(META_REPLAY_FIRST)?,
        last: position(META_REPLAY_LAST)?,
        letters,
    };
    if decision.letters.len() as u64 > (decision.last + 1).saturating_sub(decision.first) {
        return Err(corrupt(format!(
            "{} letters do not fit its range [{}, {}]",
            decision.letters.len(),
            decision.first,
            decision.last
        )));
    }
    Ok((Decided::Named(decision), carries))
}

/// The letters of `letters` that stay dead letters after `replayed` (whose
/// letters `index_at` maps from their replay-chain position to their index
/// in `letters`): those not selected or not replayable as they were, and
/// those that failed again with their new reason (for a message of which
/// only some elements failed, those elements).
pub(super) fn remainder_letters(
    letters: &[StoredLetter],
    index_at: &BTreeMap<u64, usize>,
    replayed: &Replayed,
) -> Vec<StoredLetter> {
    let index = |at: &u64| index_at.get(at).copied();
    let tried: BTreeSet<usize> = replayed
        .replayed
        .iter()
        .chain(replayed.failed.iter().map(|(at, _)| at))
        .filter_map(index)
        .collect();
    let mut kept: Vec<(usize, StoredLetter)> = letters
        .iter()
        .enumerate()
        .filter(|(i, _)| !tried.contains(i))
        .map(|(i, l)| (i, l.clone()))
        .chain(
            replayed
                .failed
                .iter()
                .filter_map(|(at, l)| Some((index(at)?, l.clone()))),
        )
        .collect();
    kept.sort_by_key(|(i, l)| (*i, l.element));
    kept.into_iter().map(|(_, l)| l).collect()
}

/// The remainder of dead-letter file `<name>.avro`: `<name>.r1.avro`, and of
/// `<name>.r<n>.avro`, `<name>.r<n+1>.avro`.
pub(super) fn remainder_path(path: &Path) -> Path {
    let name = path.filename().unwrap_or_default();
    let stem = name.strip_suffix(".avro").unwrap_or(name);
    let next = match stem.rsplit_once(".r") {
        Some((base, n)) if let Ok(n) = n.parse::<u64>() => format!("{base}.r{}", n + 1),
        _ => format!("{stem}.r1"),
    };
    let dir: Vec<_> = path.parts().collect();
    let mut parts = dir[..dir.len().saturating_sub(1)].to_vec();
    parts.push(format!("{next}.avro").into());
    Path::from_iter(parts)
}
