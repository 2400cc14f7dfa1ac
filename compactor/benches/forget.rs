//! Erasure benchmark (issues 7 and 17): `tributary forget` on a table of
//! many files.
//!
//! Stages synthetic log rows (unique keys, a million users, ten dates) as
//! row files and compacts them into a table of at least 200 Parquet files
//! (or reuses the one kept in `TRIBUTARY_BENCH_DIR`), then times, in one
//! process:
//!
//! * `keys`: forgetting 1,000 record keys taken from 10 of the table's
//!   files: files pruned, read and rewritten, the verification's reads and
//!   proofs, and the time of each phase;
//! * `batch100`, `batch1000`: 100 and 1,000 requests of one subject each in
//!   one pass ([`forget_batch`], what `forget --inbox` runs);
//! * `separate`: the baseline, requests of one subject each run one after
//!   the other (`TRIBUTARY_BENCH_SEPARATE`, default 100 runs);
//! * `full`: a request naming one key of every file (a full-table rewrite),
//!   only when `TRIBUTARY_BENCH_CASES` names it.
//!
//! Every case erases identifiers no earlier case or run erased (keys are
//! taken from the table as it is; subjects from a counter kept beside the
//! table), so the kept table can serve any number of runs.
//!
//! `cargo bench -p tributary-compactor --bench forget`; `TRIBUTARY_BENCH_ROWS`
//! (default 10,000,000) sets the table's size, `TRIBUTARY_BENCH_DIR` keeps the
//! lake in a directory of your choice (a table already there is reused: its
//! row count is what it was built with), `TRIBUTARY_BENCH_CASES` picks cases
//! (comma-separated; default `keys,batch100,batch1000,separate`). Prints a
//! table, then one line of JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deltalake::arrow::array::{ArrayRef, AsArray, Date32Array, Int64Array};
use object_store::path::Path;
use serde_json::json;
use tributary_compactor::files::TableFile;
use tributary_compactor::forget::{
    ForgetInput, ForgetOptions, ForgetReport, ForgetRequest, forget, forget_batch,
};
use tributary_config::{CompactConfig, LakeConfig};
use tributary_lake::Lake;

use crate::common::process::{proc_status_bytes, reset_peak_rss};

mod common;

/// Rows per staged row file.
const ROWS_PER_FILE: u64 = 50_000;
/// Event dates, i.e. table partitions.
const DATES: u64 = 10;
/// Distinct users (subjects).
const USERS: u64 = 1_000_000;
/// Table files wanted at least; each compaction round writes one per date.
const MIN_TABLE_FILES: u64 = 200;
/// Days since the epoch of the first date (2026-11-10).
const FIRST_DAY: i32 = 20_767;

fn main() -> anyhow::Result<()> {
    let rows = common::env_number("TRIBUTARY_BENCH_ROWS")?.unwrap_or(10_000_000);
    let separate = common::env_number("TRIBUTARY_BENCH_SEPARATE")?.unwrap_or(100);
    let cases = std::env::var("TRIBUTARY_BENCH_CASES")
        .unwrap_or_else(|_| "keys,batch100,batch1000,separate".into());
    let cases: Vec<String> = cases.split(',').map(|c| c.trim().to_string()).collect();
    let (_temp, dir) = common::work_dir()?;
    common::runtime()?.block_on(run(rows, separate, &cases, &dir))
}

/// One measured case.
struct Case {
    name: String,
    requests: u64,
    secs: f64,
    peak_rss: f64,
    /// The report of the (first) request, for a batch the pass's figures.
    report: ForgetReport,
    /// Phase times summed over the runs of the case.
    timings_ms: BTreeMap<String, u64>,
}

async fn run(
    rows: u64,
    separate: u64,
    cases: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let lake = Lake::open(&LakeConfig {
        table_uri: dir.join("table").display().to_string(),
        s3: Default::default(),
        subject_columns: vec!["user_id".into(), "user_email".into()],
        ..LakeConfig::new("")
    })?;
    let staged_files = rows.div_ceil(ROWS_PER_FILE);
    let mut config = CompactConfig {
        max_files_per_commit: (staged_files * DATES / MIN_TABLE_FILES).max(1) as usize,
        sort_columns: Some(vec!["user_id".into(), "ts".into()]),
        ..CompactConfig::default()
    };
    let built = dir.join("built-rows");
    let rows = match std::fs::read_to_string(&built) {
        Ok(kept) if lake.load_table().await?.is_some() => {
            eprintln!("reusing the table in {}", dir.display());
            kept.trim().parse().context("built-rows is not a number")?
        }
        _ => {
            eprintln!("staging {rows} rows in {staged_files} row files, compacting ...");
            let started = Instant::now();
            // In chunks of whole compaction rounds, so that the staged rows
            // never take much disk beside the table.
            let chunk = config.max_files_per_commit as u64 * ROWS_PER_FILE * 2;
            for first in (0..rows).step_by(chunk as usize) {
                stage(&lake, first, (first + chunk).min(rows)).await?;
                tributary_compactor::compact_until_empty(&config, &lake).await?;
                eprintln!("{} rows compacted", (first + chunk).min(rows));
            }
            std::fs::write(&built, rows.to_string())?;
            eprintln!("table built in {:.0} s", started.elapsed().as_secs_f64());
            rows
        }
    };
    config.checkpoint_interval = u64::MAX;
    let files = table_files(&lake).await?;
    let table_bytes: u64 = files.iter().map(|(_, size)| size).sum();
    let table_files_count = files.len();
    // Subjects no earlier run erased.
    let next_user = dir.join("next-user");
    let mut user: u64 = std::fs::read_to_string(&next_user)
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let mut subjects = |n: u64| -> anyhow::Result<Vec<String>> {
        let picked = (user..user + n)
            .map(|u| format!("u-{:07}", (u * 7_919) % USERS))
            .collect();
        user += n;
        std::fs::write(&next_user, user.to_string())?;
        Ok(picked)
    };

    let mut measured = Vec::new();
    for case in cases {
        let case = case.as_str();
        let batch = |subjects: Vec<String>| -> Vec<ForgetRequest> {
            subjects
                .into_iter()
                .enumerate()
                .map(|(i, s)| ForgetRequest {
                    id: format!("{case}-{}-{i}", std::process::id()),
                    input: ForgetInput {
                        subjects: vec![s],
                        keys: vec![],
                    },
                })
                .collect()
        };
        let requests = match case {
            "keys" => {
                let files = table_files(&lake).await?;
                let mut keys = Vec::new();
                for (path, size) in files.iter().step_by((files.len() / 10).max(1)).take(10) {
                    keys.extend(first_keys(&lake, path, *size, 100).await?);
                }
                vec![ForgetRequest {
                    id: format!("keys-{}", std::process::id()),
                    input: ForgetInput {
                        subjects: vec![],
                        keys,
                    },
                }]
            }
            "batch100" => batch(subjects(100)?),
            "batch1000" => batch(subjects(1_000)?),
            "separate" => batch(subjects(separate)?),
            "full" => {
                let mut keys = Vec::new();
                for (path, size) in &table_files(&lake).await? {
                    keys.extend(first_keys(&lake, path, *size, 1).await?);
                }
                vec![ForgetRequest {
                    id: format!("full-{}", std::process::id()),
                    input: ForgetInput {
                        subjects: vec![],
                        keys,
                    },
                }]
            }
            other => anyhow::bail!("unknown case {other:?}"),
        };
        eprintln!("forget {case} ({} requests) ...", requests.len());
        reset_peak_rss();
        let started = Instant::now();
        let mut reports = Vec::new();
        if case == "separate" {
            for request in &requests {
                let options = ForgetOptions {
                    request_id: request.id.clone(),
                    dry_run: false,
                    grace: Duration::ZERO,
                };
                reports.push(forget(&config, &lake, &request.input, &options).await?);
            }
        } else {
            for (id, report) in
                forget_batch(&config, &lake, &requests, false, Duration::ZERO).await?
            {
                reports.push(report.with_context(|| format!("request {id}"))?);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let incomplete = reports.iter().filter(|r| !r.complete).count();
        if incomplete > 0 {
            eprintln!("{case}: {incomplete} request(s) not complete");
        }
        let mut timings_ms = BTreeMap::new();
        // A batch's reports share the pass's timings: count them once.
        let runs = if case == "separate" {
            &reports[..]
        } else {
            &reports[..1]
        };
        for report in runs {
            for (phase, ms) in &report.timings_ms {
                *timings_ms.entry(phase.clone()).or_insert(0) += ms;
            }
        }
        measured.push(Case {
            name: case.to_string(),
            requests: requests.len() as u64,
            secs,
            peak_rss: proc_status_bytes("VmHWM")? as f64,
            report: reports.swap_remove(0),
            timings_ms,
        });
        if let Some(case) = measured.last() {
            // Kept on stderr as each case ends, should a later one fail.
            eprintln!(
                "{}: {:.2} s, {} files rewritten, phases (ms) {:?}",
                case.name, case.secs, case.report.table.files_rewritten, case.timings_ms
            );
        }
    }
    print_results(rows, table_files_count, table_bytes, &measured);
    Ok(())
}

fn print_results(rows: u64, files: usize, bytes: u64, cases: &[Case]) {
    println!(
        "\nForget: table of {rows} rows in {files} files ({:.1} MB)\n",
        bytes as f64 / 1e6
    );
    print!("{:<38}", "");
    for case in cases {
        print!("{:>12}", case.name);
    }
    println!();
    let line = |name: &str, f: &dyn Fn(&Case) -> String| {
        print!("{name:<38}");
        for case in cases {
            print!("{:>12}", f(case));
        }
        println!();
    };
    line("requests", &|c| c.requests.to_string());
    line("identifiers (per request)", &|c| {
        (c.report.keys_requested + c.report.subjects_requested).to_string()
    });
    line("files pruned: statistics / bloom", &|c| {
        format!(
            "{}/{}",
            c.report.table.pruned_by_statistics, c.report.table.pruned_by_bloom_filter
        )
    });
    line("files read / rewritten", &|c| {
        format!(
            "{}/{}",
            c.report.table.files_read, c.report.table.files_rewritten
        )
    });
    line("rows erased", &|c| c.report.table.rows_erased.to_string());
    line("MB rewritten", &|c| {
        format!("{:.1}", c.report.table.bytes_rewritten as f64 / 1e6)
    });
    line("verification: objects read", &|c| {
        c.report.verification.objects_read.to_string()
    });
    line("verification: MB read", &|c| {
        format!("{:.1}", c.report.verification.bytes_read as f64 / 1e6)
    });
    line("verification: proven clean stat/bloom", &|c| {
        format!(
            "{}/{}",
            c.report.verification.proven_clean_by_statistics,
            c.report.verification.proven_clean_by_bloom_filter
        )
    });
    line("complete", &|c| c.report.complete.to_string());
    for phase in [
        "record",
        "planning",
        "rewrite",
        "staged",
        "delete_replaced",
        "log",
        "verification",
        "delete_unreferenced",
    ] {
        line(&format!("{phase} (s)"), &|c| {
            format!(
                "{:.2}",
                c.timings_ms.get(phase).copied().unwrap_or(0) as f64 / 1e3
            )
        });
    }
    line("wall time (s)", &|c| format!("{:.2}", c.secs));
    line("s per request", &|c| {
        format!("{:.3}", c.secs / c.requests as f64)
    });
    if let Some(separate) = cases.iter().find(|c| c.name == "separate") {
        let per_run = separate.secs / separate.requests as f64;
        line("time ÷ same requests run separately", &|c| {
            format!("{:.3}", c.secs / (per_run * c.requests as f64))
        });
    }
    line("peak RSS (MB)", &|c| format!("{:.0}", c.peak_rss / 1e6));
    let json_cases: serde_json::Map<String, serde_json::Value> = cases
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                json!({"requests": c.requests, "secs": c.secs, "peak_rss_bytes": c.peak_rss,
                       "timings_ms": c.timings_ms, "report": c.report}),
            )
        })
        .collect();
    println!(
        "\n{}",
        json!({"bench": "forget", "rows": rows, "table_files": files, "table_bytes": bytes,
               "cases": json_cases})
    );
}

/// The table's data files and their sizes.
async fn table_files(lake: &Lake) -> anyhow::Result<Vec<(Path, u64)>> {
    let table = lake.load_table().await?.context("no table")?;
    let state = table.snapshot()?;
    Ok(state
        .log_data()
        .iter()
        .map(|f| (f.object_store_path(), f.size().max(0) as u64))
        .collect())
}

/// The first `n` keys of a table file.
async fn first_keys(lake: &Lake, path: &Path, size: u64, n: usize) -> anyhow::Result<Vec<String>> {
    let mut rows = TableFile::open(lake, path.clone(), size)
        .await?
        .rows(Default::default())?;
    let batch = rows.next().await?.context("an empty table file")?;
    let keys = batch
        .column_by_name("_key")
        .context("no _key")?
        .as_string::<i32>();
    Ok(keys.iter().flatten().take(n).map(str::to_string).collect())
}

/// Stages synthetic rows `first..end` as row files of one source partition.
async fn stage(lake: &Lake, first: u64, end: u64) -> anyhow::Result<()> {
    const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];
    const MESSAGES: [&str; 4] = ["request served", "cache miss", "slow upstream", "retrying"];
    common::stage_rows(lake, (first, end), ROWS_PER_FILE, |rows| {
        vec![
            (
                "date",
                Arc::new(Date32Array::from_iter_values(
                    rows.mixed.iter().map(|m| FIRST_DAY + (m % DATES) as i32),
                )) as ArrayRef,
            ),
            ("user_id", rows.text(|_, m| format!("u-{:07}", m % USERS))),
            (
                "user_email",
                rows.text(|_, m| format!("user{}@example.com", m % USERS)),
            ),
            ("level", rows.text(|n, _| LEVELS[(n % 4) as usize].into())),
            (
                "message",
                rows.text(|_, m| MESSAGES[(m % 4) as usize].into()),
            ),
            (
                "ts",
                Arc::new(Int64Array::from_iter_values(
                    rows.mixed
                        .iter()
                        .map(|m| 1_795_000_000_000 + (m % 86_400_000) as i64),
                )) as ArrayRef,
            ),
        ]
    })
    .await
}
