//! Unit tests of the replay, and tests against a local lake.

mod units {
    use super::super::remainder::*;
    use super::super::*;

    #[test]
    fn remainders_count_generations() {
        let p = Path::from("_tributary/dead-letter/s/p/00000000000000000007.avro");
        let r1 = remainder_path(&p);
        assert_eq!(
            r1.as_ref(),
            "_tributary/dead-letter/s/p/00000000000000000007.r1.avro"
        );
        assert_eq!(
            remainder_path(&r1).as_ref(),
            "_tributary/dead-letter/s/p/00000000000000000007.r2.avro"
        );
        assert_eq!(source_partition(&p), PartitionId::from_safe_parts("s", "p"));
    }

    fn letter(position: u64, reason: &str) -> StoredLetter {
        StoredLetter {
            position,
            element: None,
            reason: reason.into(),
            error: "e".into(),
            payload: b"x".to_vec(),
            payload_bytes: 1,
            schema_header: None,
            written_at_ms: None,
        }
    }

    #[test]
    fn the_remainder_keeps_what_was_not_replayed_and_new_failures() {
        let letters = vec![
            letter(1, "unknown_schema"),
            letter(2, "unknown_schema"),
            letter(3, "malformed_json"),
            letter(4, "unknown_schema"),
        ];
        let mut failed = letter(2, "decode");
        failed.element = Some(1);
        // Letters 0, 1 and 3 were selected, at 10, 11 and 12 of the chain.
        let index_at = BTreeMap::from([(10, 0), (11, 1), (12, 3)]);
        let replayed = Replayed {
            rows: 2,
            row_file: None,
            replayed: vec![10, 11],
            failed: vec![(11, failed.clone()), (12, letter(4, "decode"))],
        };
        let kept = remainder_letters(&letters, &index_at, &replayed);
        assert_eq!(
            kept,
            vec![failed, letter(3, "malformed_json"), letter(4, "decode")]
        );
    }

    #[test]
    fn letter_names_round_trip() {
        let mut element = letter(7, "flatten");
        element.element = Some(2);
        let names = [LetterId::of(&letter(7, "x")), LetterId::of(&element)];
        let text: Vec<String> = names.iter().map(LetterId::to_string).collect();
        assert_eq!(text, ["7", "7.2"]);
        let parsed: Vec<_> = text.iter().map(|t| LetterId::parse(t)).collect();
        assert_eq!(parsed, names.map(Some));
        assert_eq!(LetterId::parse("7.x"), None);
        assert_eq!(LetterId::parse(""), None);
    }
}

mod lake {
    use super::super::remainder::*;
    use super::super::*;
    use tributary_lake::dead_letter::{self, DeadLetter, Reason};
    use tributary_lake::rowfile::Codec;

    fn setup(dir: &std::path::Path) -> (Lake, IngestConfig) {
        let text = format!(
            "[lake]\ntable_uri = \"{}\"\n[ingest]\nstream = \"s\"\n[ingest.files]\npath = \"{}\"\n\
             [ingest.flatten]\nexplode = \"messages\"\nkey_field = \"messages_id\"\n",
            dir.join("table").display(),
            dir.join("in").display()
        );
        let config = tributary_config::Config::from_toml_str(&text, std::iter::empty()).unwrap();
        let lake = Lake::open(&config.lake).unwrap();
        (lake, config.ingest.unwrap())
    }

    fn letter(position: u64, payload: &[u8]) -> DeadLetter {
        DeadLetter::new(position, Reason::UnknownSchema, "before", payload, 1 << 20)
    }

    /// Stages a row file for `p` covering `[first, last]` (the batch's
    /// commit point).
    async fn commit_batch(lake: &Lake, p: &PartitionId, first: u64, last: u64) {
        let batch = deltalake::arrow::record_batch::RecordBatch::try_from_iter([(
            "_position",
            std::sync::Arc::new(deltalake::arrow::array::Int64Array::from(vec![
                first as i64,
            ])) as deltalake::arrow::array::ArrayRef,
        )])
        .unwrap();
        let file = tributary_lake::rowfile::write(
            &batch,
            Codec::Zstd,
            chain::file_metadata(p, first, last),
        )
        .unwrap();
        chain::stage(lake.store().as_ref(), p, first, file)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn letters_of_uncommitted_batches_wait_and_a_decided_file_stages_what_was_decided() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let good = br#"{"messages":[{"id":"k1"},{"id":"k2"}]}"#;
        let letters = [letter(3, good), letter(7, b"{bad"), letter(9, good)];
        let file = dead_letter::encode(&p, 0, 10, &letters, Codec::Zstd).unwrap();
        chain::stage_dead_letters(store, &p, 0, 10, file)
            .await
            .unwrap();
        let everything = Selection::default();

        // Ingest has not staged the batch: it may still stage these itself.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(report.files_not_committed, 1);
        assert_eq!(report.replayed, 0);

        // Committed; a stopped run had decided that only letter 0 becomes
        // rows (letter 2 was not selected then) and wrote the remainder.
        commit_batch(&lake, &p, 0, 10).await;
        let path = p.dead_letter_file(0);
        let remainder = remainder_path(&path);
        let kept: Vec<StoredLetter> = letters[1..].iter().map(StoredLetter::from).collect();
        let decision = Decision {
            first: 0,
            last: 0,
            letters: vec![LetterId {
                position: 3,
                element: None,
            }],
        };
        let metadata = [
            (META_REPLAY_OF.to_string(), path.to_string()),
            (chain::META_LAST_POSITION.to_string(), "9".to_string()),
        ]
        .into_iter()
        .chain(decision.metadata());
        let body = encode_stored(&kept, Codec::Zstd, metadata).unwrap();
        store.put(&remainder, body.into()).await.unwrap();

        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (1, 2), "{report:?}");
        assert_eq!((report.files_retired, report.remainders_waiting), (1, 1));
        assert!(store.head(&path).await.is_err(), "the file is retired");
        let staged = chain::staged_partitions(store).await.unwrap();
        let replay_chain: Vec<_> = staged
            .iter()
            .filter(|id| id.stream() == REPLAY_STREAM)
            .collect();
        assert_eq!(replay_chain.len(), 1);

        // The next run replays the remainder: letter 2 becomes rows, the
        // bad one stays with its new reason.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (1, 2), "{report:?}");
        assert_eq!(
            report.still_failing,
            BTreeMap::from([("malformed_json".to_string(), 1)])
        );
        let left: Vec<_> = dead_letter_files(&lake)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.location.filename().unwrap_or_default().to_string())
            .collect();
        assert_eq!(left, vec!["00000000000000000000.r2.avro".to_string()]);
        // A third run changes nothing.
        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(
            (
                report.replayed,
                report.remainder_files,
                report.files_retired
            ),
            (0, 0, 0)
        );
    }

    /// The `_key`s of the rows staged on `p`'s replay chain, by the first
    /// position of their file.
    async fn replayed_keys(lake: &Lake, p: &PartitionId) -> Vec<(u64, Vec<String>)> {
        use deltalake::arrow::array::AsArray;
        let store = lake.store().as_ref();
        let mut keys = Vec::new();
        for file in chain::staged_files(store, &replay_chain(p)).await.unwrap() {
            let bytes = tributary_lake::read_object(store, &file.path)
                .await
                .unwrap();
            let rows = RowFile::read(&bytes, "staged").unwrap().batch;
            let column = rows.column_by_name("_key").unwrap().as_string::<i32>();
            let file_keys = column.iter().map(|k| k.unwrap().to_string()).collect();
            keys.push((file.first, file_keys));
        }
        keys
    }

    /// The compactor's config for the lake of [`setup`], with `extra`.
    fn compact_config(dir: &std::path::Path, extra: &str) -> tributary_config::CompactConfig {
        let text = format!(
            "[lake]\ntable_uri = \"{}\"\n{extra}",
            dir.join("table").display()
        );
        tributary_config::Config::from_toml_str(&text, std::iter::empty())
            .unwrap()
            .compact
    }

    fn envelope(id: &str) -> Vec<u8> {
        format!(r#"{{"messages":[{{"id":"{id}"}}]}}"#).into_bytes()
    }

    fn stored(position: u64, reason: &str, payload: &[u8], written_at_ms: i64) -> StoredLetter {
        StoredLetter {
            position,
            element: None,
            reason: reason.into(),
            error: "before".into(),
            payload: payload.to_vec(),
            payload_bytes: payload.len() as u64,
            schema_header: None,
            written_at_ms: Some(written_at_ms),
        }
    }

    /// Starts a replay that waits after `step` of its first file and stops
    /// it there once `written` exists (as a `kill -9` would).
    async fn replay_stopped_after(
        lake: &Lake,
        config: &IngestConfig,
        selection: &Selection,
        step: &str,
        written: &Path,
    ) {
        let task = tokio::spawn({
            let (lake, config, selection) = (lake.clone(), config.clone(), selection.clone());
            let pause = Some((step.to_string(), 1));
            async move { replay_pausing(&lake, &config, &selection, false, pause).await }
        });
        for _ in 0..600 {
            if lake.store().head(written).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!task.is_finished(), "the replay ended instead of pausing");
        task.abort();
        assert!(
            lake.store().head(written).await.is_ok(),
            "{written} never appeared"
        );
    }

    /// Regression (issue 17 review): a replay stopped after writing its
    /// remainder named the letters to stage by index; retention dropping
    /// letters of the file before the rerun shifted those indexes, and the
    /// rerun staged the wrong letters and lost one. The rerun must stage
    /// exactly the decided letters the file still holds.
    #[tokio::test]
    async fn a_rerun_after_retention_rewrote_the_file_stages_exactly_the_decided_letters_left() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let now = chrono::Utc::now().timestamp_millis();
        let old = now - 40 * 86_400_000;
        // Two letters not selected (one past the retention age), three
        // selected, the last of them past the retention age.
        let letters = [
            stored(1, "malformed_json", b"{bad", old),
            stored(2, "malformed_json", b"{bad", now),
            stored(3, "unknown_schema", &envelope("k3"), now),
            stored(5, "unknown_schema", &envelope("k5"), now),
            stored(7, "unknown_schema", &envelope("k7"), old),
        ];
        let file = encode_stored(&letters, Codec::Zstd, chain::file_metadata(&p, 0, 10)).unwrap();
        chain::stage_dead_letters(store, &p, 0, 10, file)
            .await
            .unwrap();
        commit_batch(&lake, &p, 0, 10).await;
        let path = p.dead_letter_file(0);
        let remainder = remainder_path(&path);
        let unknown = Selection {
            reason: Some("unknown_schema".into()),
            ..Default::default()
        };
        replay_stopped_after(&lake, &config, &unknown, "decided", &remainder).await;
        assert!(
            replayed_keys(&lake, &p).await.is_empty(),
            "nothing staged yet"
        );

        // Retention drops the letters past 30 days from the file and its
        // remainder.
        let compact = compact_config(dir.path(), "[retention]\nmax_age_days = 30\n");
        let options = crate::retention::RetentionOptions::new(&compact, false);
        let expired = crate::retention::retention(&compact, &lake, &options)
            .await
            .unwrap();
        // Letters 1 and 7 of the file, letter 1 of the remainder.
        assert_eq!(expired.row_files.dead_letters_expired, 3, "{expired:?}");

        let report = replay(&lake, &config, &unknown, false).await.unwrap();
        assert_eq!((report.replayed, report.staged_rows), (2, 2), "{report:?}");
        assert_eq!(report.decided_letters_gone, 1, "{report:?}");
        assert_eq!(report.files_retired, 1, "{report:?}");
        let keys = vec!["k3".to_string(), "k5".to_string()];
        assert_eq!(replayed_keys(&lake, &p).await, vec![(0, keys)]);
        let left = read_dead_letters(
            &tributary_lake::read_object(store, &remainder)
                .await
                .unwrap(),
            "r",
        )
        .unwrap();
        assert_eq!(
            left,
            letters[1..2].to_vec(),
            "the remainder keeps the letter not selected"
        );
        assert!(store.head(&path).await.is_err(), "the file is retired");
    }

    /// Every replay of a source partition's letters, file after file and
    /// run after run, stages on the one replay chain of that partition, at
    /// the next free positions: the table gets one `txn` entry for it, not
    /// one per replayed file. A replay stopped after staging, compacted,
    /// then run again, finds its range committed and stages nothing again.
    #[tokio::test]
    async fn replays_of_a_partition_share_one_chain_through_stops_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (lake, config) = setup(dir.path());
        let store = lake.store().as_ref();
        let p = PartitionId::new("s", "p");
        let now = chrono::Utc::now().timestamp_millis();
        for (first, ids) in [(0, ["a0", "a1"]), (10, ["b0", "b1"])] {
            let letters: Vec<_> = (first..)
                .zip(ids)
                .map(|(at, id)| stored(at, "unknown_schema", &envelope(id), now))
                .collect();
            let file = encode_stored(
                &letters,
                Codec::Zstd,
                chain::file_metadata(&p, first, first + 9),
            )
            .unwrap();
            chain::stage_dead_letters(store, &p, first, first + 9, file)
                .await
                .unwrap();
        }
        // The source's batch [0, 19], with a real row, so that the compactor
        // commits it.
        let settings = BatchSettings::from_config(&config);
        let source_row = [(0, stored(0, "none", &envelope("src"), now))];
        let mut types = ColumnTypes::default();
        let batch = replay_letters(
            &p,
            &p,
            (0, 19),
            &settings,
            &Schemas::default(),
            &mut types,
            &source_row,
        )
        .unwrap();
        let file = batch.row_file.unwrap();
        chain::stage(store, &p, 0, file).await.unwrap();
        let everything = Selection::default();
        // The first file's replay stops once staged; the compactor commits
        // it (the replay chain's watermark is 1; the staged file is gone).
        let staged = replay_chain(&p).staged_file(0);
        replay_stopped_after(&lake, &config, &everything, "staged", &staged).await;
        let compact = compact_config(dir.path(), "");
        let metrics = crate::compact::compact_until_empty(&compact, &lake)
            .await
            .unwrap();
        assert!(store.head(&staged).await.is_err(), "compacted: {metrics:?}");

        let report = replay(&lake, &config, &everything, false).await.unwrap();
        assert_eq!(report.files_already_staged, 1, "{report:?}");
        assert_eq!(
            (report.replayed, report.files_retired),
            (2, 2),
            "{report:?}"
        );
        // The second file's rows go after the committed range.
        let keys = vec!["b0".to_string(), "b1".to_string()];
        assert_eq!(replayed_keys(&lake, &p).await, vec![(2, keys)]);
        let staged = chain::staged_partitions(store).await.unwrap();
        let chains: Vec<_> = staged
            .iter()
            .filter(|id| id.stream() == REPLAY_STREAM)
            .collect();
        assert_eq!(chains, vec![&replay_chain(&p)]);
        assert!(dead_letter_files(&lake).await.unwrap().is_empty());
    }
}
