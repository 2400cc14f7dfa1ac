//! The fan-out chain's proof obligation as a property: whatever the
//! batch sizes, crashes between the tables' puts, zombie writers with a
//! stale view and compactions in between, every table ends up with each
//! of its rows exactly once (files may overlap after a zombie; compaction
//! keeps a position from the first file that covers it).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use deltalake::arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use proptest::prelude::*;
use tributary_config::Unlisted;
use tributary_lake::chain::{self, file_metadata};
use tributary_lake::dead_letter::{self, read_dead_letters};
use tributary_lake::rowfile::{self, Codec, RowFile};

use super::*;
use crate::batch::Message;

/// Tables: `a` (value v0), `b` (v1), the lead `rest` (other values and
/// dead letters).
const TABLES: usize = 3;

fn route(unlisted: Unlisted) -> FieldRoute {
    FieldRoute {
        topic: "web".into(),
        field: "host".into(),
        values: BTreeMap::from([("v0".into(), "a".into()), ("v1".into(), "b".into())]),
        unlisted,
        default_table: Some("rest".into()),
        dead_letter_table: Some("rest".into()),
    }
}

fn router(unlisted: Unlisted) -> RowRouter {
    RowRouter::new(&route(unlisted), ("_op".into(), "delete".into()))
}

/// A message of the partition: its value (0..=3), or a delete (4).
#[derive(Debug, Clone, Copy)]
struct Msg {
    position: u64,
    value: u8,
}

/// The tables a message's row belongs in (none: a dead letter).
fn expected(msg: Msg, unlisted: Unlisted) -> Vec<usize> {
    match (msg.value, unlisted) {
        (0, _) => vec![0],
        (1, _) => vec![1],
        (4, _) => vec![0, 1, 2],
        (_, Unlisted::Default) => vec![2],
        (_, Unlisted::DeadLetter) => vec![],
    }
}

/// The decoded rows of `msgs`: one row each; a v0 row has a column of
/// its own (`a_only`), a delete has no host and the delete marker.
fn rows(msgs: &[Msg]) -> RecordBatch {
    let text = |f: &dyn Fn(&Msg) -> Option<String>| -> ArrayRef {
        Arc::new(msgs.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("_key", text(&|m| Some(format!("k{}", m.position)))),
        (
            "_position",
            Arc::new(Int64Array::from_iter_values(
                msgs.iter().map(|m| m.position as i64),
            )),
        ),
        ("date", Arc::new(Date32Array::from(vec![None; msgs.len()]))),
        (
            "host",
            text(&|m| (m.value < 4).then(|| format!("v{}", m.value))),
        ),
        (
            "_op",
            text(&|m| (m.value == 4).then(|| "delete".to_string())),
        ),
        ("a_only", text(&|m| (m.value == 0).then(|| "x".to_string()))),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// The partition as a store per table sees it, and the compacted rows.
struct Lake {
    id: PartitionId,
    stores: Vec<InMemory>,
    watermarks: Vec<Option<u64>>,
    compacted: Vec<Vec<u64>>,
}

impl Lake {
    fn new() -> Self {
        Self {
            id: PartitionId::new("s", "web-0"),
            stores: (0..TABLES).map(|_| InMemory::new()).collect(),
            watermarks: vec![None; TABLES],
            compacted: vec![Vec::new(); TABLES],
        }
    }

    /// Where a writer starting now resumes each table.
    async fn resumes(&self) -> Resumes {
        let mut each = Vec::new();
        for (store, watermark) in self.stores.iter().zip(&self.watermarks) {
            each.push(
                chain::resume_after(store, &self.id, *watermark)
                    .await
                    .unwrap(),
            );
        }
        Resumes::fan_in(each)
    }

    /// What the compactor does to table `t`, for its `take` oldest
    /// staged files: keep each file's rows after the watermark and the
    /// files before it, move the watermark to the newest file's last,
    /// delete the files.
    async fn compact(&mut self, t: usize, take: usize) {
        let store = &self.stores[t];
        let mut covered = self.watermarks[t];
        let staged = chain::staged_files(store, &self.id).await.unwrap();
        for file in staged.into_iter().take(take) {
            let bytes = store.get(&file.path).await.unwrap().bytes().await.unwrap();
            let read = RowFile::read(&bytes, file.path.as_ref()).unwrap();
            let last = chain::last_position(&read.metadata, "f").unwrap();
            if t != 0 {
                assert!(read.batch.column_by_name("a_only").is_none());
            }
            let positions = read.batch.column_by_name("_position").unwrap();
            let positions = positions.as_primitive::<Int64Type>();
            let kept = positions.values().iter().map(|&p| p as u64);
            self.compacted[t].extend(kept.filter(|&p| covered.is_none_or(|c| p > c)));
            covered = covered.max(Some(last));
            store.delete(&file.path).await.unwrap();
        }
        self.watermarks[t] = covered;
    }

    /// The positions of the dead letters of the lead.
    async fn dead_letters(&self) -> BTreeSet<u64> {
        let store = &self.stores[TABLES - 1];
        let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
            .await
            .unwrap();
        let mut positions = BTreeSet::new();
        for meta in listed
            .iter()
            .filter(|m| m.location.as_ref().contains("dead-letter"))
        {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            for letter in read_dead_letters(&bytes, "d").unwrap() {
                assert_eq!(letter.reason, "unrouted");
                positions.insert(letter.position);
            }
        }
        positions
    }
}

/// One writer of the partition: where it thinks each table is, and how
/// many puts it has left before it crashes.
struct Writer {
    resumes: Resumes,
    puts_left: Option<usize>,
}

/// A writer stages the next `size` messages after its resume point.
/// Returns false when it crashed (a put failed).
async fn stage_batch(
    lake: &Lake,
    writer: &mut Writer,
    router: &RowRouter,
    msgs: &[Msg],
    size: usize,
) -> bool {
    let after = writer.resumes.after();
    let start = msgs.partition_point(|m| after.is_some_and(|a| m.position <= a));
    let batch = &msgs[start..(start + size).min(msgs.len())];
    let Some(last) = batch.last().map(|m| m.position) else {
        return true;
    };
    let items: Vec<SourceItem> = batch
        .iter()
        .map(|m| SourceItem::Message(Message::new(m.position, b"{}".to_vec())))
        .collect();
    let decoded = rows(batch);
    let shares = router.split(&decoded, Vec::new(), &items, 100, &writer.resumes);
    let files: Vec<Option<(u64, Bytes, Option<Bytes>)>> = shares
        .into_iter()
        .map(|share| {
            let part = share?.part(&decoded, last).unwrap();
            let metadata = file_metadata(&lake.id, part.first, part.last);
            let row_file = rowfile::write(&part.rows, Codec::Zstd, metadata).unwrap();
            let letters = (!part.dead_letters.is_empty()).then(|| {
                dead_letter::encode(&lake.id, part.first, last, &part.dead_letters, Codec::Zstd)
                    .unwrap()
            });
            Some((part.first, row_file, letters))
        })
        .collect();
    let puts = AtomicUsize::new(writer.puts_left.unwrap_or(usize::MAX));
    let staged = stage_parts(files, last, &writer.resumes, |t, (first, file, letters)| {
        let (store, id, puts) = (&lake.stores[t], &lake.id, &puts);
        async move {
            let put = || {
                let left = puts.load(Ordering::SeqCst);
                puts.store(left.saturating_sub(1), Ordering::SeqCst);
                match left {
                    0 => Err(Error::Unrouted {
                        topic: "crash".into(),
                    }),
                    _ => Ok(()),
                }
            };
            if let Some(letters) = letters {
                put()?;
                chain::stage_dead_letters(store, id, first, last, letters).await?;
            }
            put()?;
            Ok(chain::stage(store, id, first, file).await?)
        }
    })
    .await;
    match staged {
        Ok(now) => {
            writer.resumes = now;
            writer.puts_left = writer.puts_left.map(|_| puts.load(Ordering::SeqCst));
            true
        }
        Err(_) => false,
    }
}

#[derive(Debug, Clone)]
struct Step {
    writer: usize,
    size: usize,
    /// Puts before this writer crashes, when it starts.
    crash_after: Option<usize>,
    /// A table compacted first, and how many staged files it takes.
    compact: Option<(usize, usize)>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..2usize,
        1..6usize,
        prop::option::weighted(0.3, 0..5usize),
        prop::option::weighted(0.2, (0..TABLES, 1..4usize)),
    )
        .prop_map(|(writer, size, crash_after, compact)| Step {
            writer,
            size,
            crash_after,
            compact,
        })
}

fn messages() -> impl Strategy<Value = Vec<Msg>> {
    prop::collection::vec((1..3u64, 0..5u8), 1..40).prop_map(|gaps| {
        let mut position = 0;
        gaps.into_iter()
            .map(|(gap, value)| {
                position += gap;
                Msg { position, value }
            })
            .collect()
    })
}

async fn run(msgs: Vec<Msg>, steps: Vec<Step>, unlisted: Unlisted) {
    let router = router(unlisted);
    let mut lake = Lake::new();
    let mut writers: [Option<Writer>; 2] = [None, None];
    for step in steps {
        if let Some((t, take)) = step.compact {
            lake.compact(t, take).await;
        }
        if writers[step.writer].is_none() {
            writers[step.writer] = Some(Writer {
                resumes: lake.resumes().await,
                puts_left: step.crash_after,
            });
        }
        if let Some(writer) = &mut writers[step.writer]
            && !stage_batch(&lake, writer, &router, &msgs, step.size).await
        {
            writers[step.writer] = None;
        }
    }
    // A writer that stays up reads to the end; then everything is compacted.
    let mut last = Writer {
        resumes: lake.resumes().await,
        puts_left: None,
    };
    while last.resumes.after() < msgs.last().map(|m| m.position) {
        assert!(stage_batch(&lake, &mut last, &router, &msgs, 3).await);
    }
    for t in 0..TABLES {
        lake.compact(t, usize::MAX).await;
        let mut want: Vec<u64> = msgs
            .iter()
            .filter(|m| expected(**m, unlisted).contains(&t))
            .map(|m| m.position)
            .collect();
        want.sort_unstable();
        let mut got = lake.compacted[t].clone();
        got.sort_unstable();
        assert_eq!(got, want, "table {t}");
    }
    let unrouted: BTreeSet<u64> = msgs
        .iter()
        .filter(|m| expected(**m, unlisted).is_empty())
        .map(|m| m.position)
        .collect();
    assert_eq!(lake.dead_letters().await, unrouted);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn every_table_holds_its_rows_once_whatever_crashes_and_zombies_do(
        msgs in messages(),
        steps in prop::collection::vec(step(), 0..30),
        dead_letter in any::<bool>(),
    ) {
        let unlisted = if dead_letter { Unlisted::DeadLetter } else { Unlisted::Default };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(run(msgs, steps, unlisted));
    }
}

#[test]
fn rows_go_by_value_deletes_everywhere_and_the_unroutable_say_why() {
    let msgs: Vec<Msg> = [0, 1, 3, 4]
        .iter()
        .enumerate()
        .map(|(i, &value)| Msg {
            position: i as u64,
            value,
        })
        .collect();
    let batch = rows(&msgs);
    assert_eq!(
        router(Unlisted::Default).targets(&batch),
        [
            Target::Table(0),
            Target::Table(1),
            Target::Table(2),
            Target::Every
        ]
    );
    let dead = router(Unlisted::DeadLetter).targets(&batch);
    let Target::Unrouted(why) = &dead[2] else {
        panic!("{dead:?}");
    };
    assert!(
        why.contains("\"v3\"") && why.contains("topic `web`"),
        "{why}"
    );

    // A field holding a list is compared as its text.
    let lists =
        deltalake::arrow::array::ListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![
            Some(1),
        ])]);
    let batch = RecordBatch::try_from_iter([("host", Arc::new(lists) as ArrayRef)]).unwrap();
    let Target::Unrouted(why) = &router(Unlisted::DeadLetter).targets(&batch)[0] else {
        panic!("a list is not a listed value");
    };
    assert!(why.contains("\"[1]\""), "{why}");
}

#[test]
fn a_joiner_starts_where_the_slowest_table_is_unless_nothing_was_staged() {
    assert_eq!(
        Resumes::fan_in(vec![None, Some(9), Some(7)]).0,
        [Some(7), Some(9), Some(7)]
    );
    // The lead has nothing: the batch staged elsewhere may be the
    // first one; everything is read from the start.
    let first = Resumes::fan_in(vec![Some(9), None, None]);
    assert_eq!(first.0, [Some(9), None, None]);
    assert_eq!(first.after(), None);
}
