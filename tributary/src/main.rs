//! The `tributary` binary: a thin command line over the library crates.
//!
//! Exit codes: 0 success (or a drained shutdown after SIGTERM/SIGINT),
//! 1 a runtime error, 2 a bad command line or configuration, 3 a shutdown
//! that did not drain within `service.shutdown_grace_ms`.

mod forget;
mod process;
mod quickstart;
mod registry;
mod sample;
mod service;
mod tables;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prometheus::Registry;
use tokio::sync::watch;
use tributary_compactor::{ServedTable, Tables};
use tributary_config::Config;
use tributary_lake::Lake;

use crate::service::Check;

/// Streams log records into a Delta Lake table, exactly once.
#[derive(Debug, Parser)]
#[command(name = "tributary", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the configured source and stage row files in the lake.
    Ingest {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Read what the source holds now, stage it, and exit instead of
        /// following it: files are treated as complete, Kafka partitions are
        /// read up to their end offsets at assignment, Kinesis shards up to
        /// the records that arrived before the run started. No HTTP endpoint
        /// is served in this mode.
        #[arg(long)]
        once: bool,
    },
    /// Merge staged row files into the Delta table.
    Compact {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Compact everything staged now, print the report as JSON, and exit
        /// instead of running forever. No HTTP endpoint is served in this mode.
        #[arg(long)]
        once: bool,
    },
    /// Merge each table partition's small Parquet files into large sorted
    /// ones (bin-packing up to `compact.target_file_bytes`), one commit per
    /// merged bin, holding the partition's lease. Prints a JSON report.
    Optimize {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Only this partition (a `date` value such as `2026-11-22`; on a
        /// routed configuration with `--table`).
        #[arg(long)]
        partition: Option<String>,
        /// The table, on a routed configuration (`lake.table_uri` ending
        /// in `/${table}`): only this one. Default: every table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Physically delete data files the table no longer references: files
    /// removed more than the retention period ago, and files never committed
    /// (orphans of failed writes) older than both the retention period and
    /// one hour. Prints a JSON report.
    Vacuum {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// How long removed files are kept for readers of older table
        /// versions, in hours (0 deletes them at once). Default:
        /// `compact.vacuum_retention_ms` (7 days).
        #[arg(long)]
        retention_hours: Option<f64>,
        /// Report what would be deleted without deleting it.
        #[arg(long)]
        dry_run: bool,
        /// The table, on a routed configuration (`lake.table_uri` ending
        /// in `/${table}`): only this one. Default: every table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Erase every row of the given subjects (values of `lake.subject_columns`)
    /// or record keys from the table, staged row files and dead letters,
    /// expire the Delta log entries that could hold them, and verify that no
    /// object under the table holds them. Prints a JSON report (also stored
    /// at `_tributary/forget/<id>.report.json`). Rerun with the same request
    /// id and identifiers to resume a killed run or to finish one whose
    /// replaced files were waiting for the grace period.
    Forget {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// On a routed configuration (`lake.table_uri` ending in
        /// `/${table}`): only this table; default: every table, named or
        /// found under the template's parent (a person's records can be in
        /// any), and the request is complete once it is in every one. On an
        /// unrouted one: the table's name (the last segment of
        /// `lake.table_uri`), a guard against the wrong configuration.
        #[arg(long)]
        table: Option<String>,
        /// A file of subject ids, one per line (`-` for stdin).
        #[arg(long, required_unless_present_any = ["keys", "inbox", "audit"])]
        subjects: Option<PathBuf>,
        /// A file of record keys, one per line (`-` for stdin).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The request id (`[A-Za-z0-9_.-]`, at most 100). Default: a new id
        /// from the current time.
        #[arg(long)]
        request_id: Option<String>,
        /// Run every request dropped into this prefix (`s3://bucket/prefix`
        /// or a directory, outside the table): an object `<request-id>.json`
        /// holding `{"subjects": [...], "keys": [...]}`. A request's object
        /// is deleted once the request is complete; an incomplete one is
        /// taken up again by the next run. Prints one report per line.
        #[arg(long, conflicts_with_all = ["subjects", "keys", "request_id"])]
        inbox: Option<String>,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Change nothing: read every object under the table and look for
        /// the identifiers of every completed request (by their hashes in
        /// the ledger: as whole values and whole tokens of text). Prints a
        /// JSON report and fails (exit code 1) when any is left.
        #[arg(long, conflicts_with_all = ["subjects", "keys", "request_id", "inbox", "dry_run"])]
        audit: bool,
        /// Minutes replaced table files are kept for running readers before
        /// they are deleted (0 deletes them at once).
        #[arg(long, default_value_t = 60)]
        grace_minutes: u64,
    },
    /// Apply the retention rules (`[retention]` and its rules object): remove
    /// table partitions past `retention.max_age_days` in one commit, rewrite
    /// the files that hold a tenant's rows past its rule, drop expired rows
    /// from staged row files and expired dead letters, delete the replaced
    /// files after the grace period and expire the Delta log entries that
    /// could still describe them. Prints a JSON report; progress on stderr.
    Retention {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Report what would expire without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Minutes files removed from the table are kept for running readers
        /// before they are deleted (0 deletes them at once). Default:
        /// `retention.grace_ms`.
        #[arg(long)]
        grace_minutes: Option<u64>,
        /// Apply the rules as of this day (`YYYY-MM-DD`, UTC) instead of
        /// today: with `--dry-run`, what will have expired by then.
        #[arg(long)]
        as_of: Option<chrono::NaiveDate>,
        /// The table, on a routed configuration (`lake.table_uri` ending
        /// in `/${table}`): only this one. Default: every table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Ask a running process's HTTP endpoint for a health path and exit 0 if
    /// it answers 200, else 1 (container health checks in images without curl).
    Probe {
        /// The endpoint's address (`service.listen_addr`).
        #[arg(long, default_value = "127.0.0.1:9500")]
        addr: std::net::SocketAddr,
        /// `/healthz` (alive) or `/readyz` (ready for work).
        #[arg(long, default_value = "/healthz")]
        path: String,
    },
    /// The schema registry service.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Inspect data availability events (`[events]`, delivered by the
    /// long-running `tributary compact`).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Inspect the dead-letter store: counts, and entries with their errors.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Generate sample logs, ingest and compact them on this machine, and
    /// print a summary.
    Quickstart {
        /// Directory for the sample input and the table.
        #[arg(long, default_value = "./tributary-quickstart")]
        dir: PathBuf,
        /// Number of log records (rows) to generate.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print, as JSON, the events of the table's newest commits and, for
    /// each configured sink, the next version it will be told of and how
    /// many versions it has yet to pass; each event names the sinks it is
    /// still pending for.
    List {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// List from this table version on (default: the newest `--limit`
        /// versions).
        #[arg(long)]
        since: Option<u64>,
        /// Most events listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// The table, required on a routed configuration (`lake.table_uri`
        /// ending in `/${table}`).
        #[arg(long)]
        table: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLettersCommand {
    /// Print, as JSON, how many dead letters the table holds, by reason, by
    /// source partition (`<stream>/<partition>`) and by the day they were
    /// written. Reads every dead-letter file (progress on stderr).
    List {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// The table, on a routed configuration (`lake.table_uri` ending
        /// in `/${table}`): only this one. Default: every table.
        #[arg(long)]
        table: Option<String>,
    },
    /// Print dead letters as JSON lines, oldest first: object, partition,
    /// position, element, reason, error and payload size. Payloads are left
    /// out unless `--payload` is given: they may hold personal data.
    Show {
        #[command(flatten)]
        select: SelectArgs,
        /// Most entries printed.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Include each entry's kept payload (UTF-8 text, else base64).
        #[arg(long)]
        payload: bool,
    },
    /// Run the selected dead letters through the current decoder, registry
    /// and flattening (`[ingest]` of the config) into the table's staging,
    /// exactly once, then retire them: a file is deleted once its letters
    /// are rows or, when they fail again, in a remainder file with their
    /// new reason. Safe to stop at any point and run again. Prints a JSON
    /// report; progress on stderr.
    Replay {
        #[command(flatten)]
        select: SelectArgs,
        /// Decode and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The configuration and which dead letters `show` and `replay` work on.
#[derive(Debug, clap::Args)]
struct SelectArgs {
    /// The TOML configuration file (see config/README.md).
    #[arg(long)]
    config: PathBuf,
    /// The table, required on a routed configuration (`lake.table_uri`
    /// ending in `/${table}`).
    #[arg(long)]
    table: Option<String>,
    /// Only this reason (`malformed_json`, `decode`, `unknown_schema`, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only this stream (`app`) or source partition (`app/0`).
    #[arg(long)]
    partition: Option<String>,
    /// Only dead-letter files written more than this long ago
    /// (`30m`, `12h`, `7d`).
    #[arg(long, value_parser = parse_age)]
    older_than: Option<Duration>,
}

impl SelectArgs {
    /// The configuration, the table, and the selection.
    async fn open(
        self,
        command: &str,
    ) -> anyhow::Result<(
        Config,
        ServedTable,
        tributary_compactor::dead_letters::Selection,
    )> {
        let config = Config::load(&self.config)?;
        let table = tables::one(&config, self.table.as_deref(), command).await?;
        let written_before = self
            .older_than
            .map(|age| chrono::TimeDelta::from_std(age).map(|age| chrono::Utc::now() - age))
            .transpose()?;
        let selection = tributary_compactor::dead_letters::Selection {
            reason: self.reason,
            partition: self.partition,
            written_before,
        };
        Ok((config, table, selection))
    }
}

/// An age such as `90s`, `30m`, `12h` or `7d`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not an age like 30m, 12h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is one of s, m, h, d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Serve the schema registry's REST API (a Confluent-compatible subset)
    /// with `/metrics`, `/healthz` and `/readyz`, on `registry.listen_addr`.
    /// Any number of replicas may share one `registry.store_uri`. SIGTERM or
    /// SIGINT stops it after the requests in flight.
    Serve {
        /// The TOML configuration file with a `[registry]` section (see
        /// config/README.md).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Quickstart { .. } | Command::Probe { .. }
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Work still running after a timed-out drain must not hold up the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.is::<tributary_config::ConfigError>()) {
                ExitCode::from(2)
            } else if e.is::<DrainTimedOut>() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest { config, once } => {
            let config = Config::load(&config)?;
            let ingest = config.require_ingest()?;
            // The one table, or with `[ingest.routing]` a table per topic.
            let tables = tributary_ingest::Tables::new(&config)?;
            let registry = Registry::new();
            let telemetry = tributary_ingest::IngestTelemetry::register(&registry, &ingest.stream)?;
            let shutdown = shutdown_signal();
            let mode = if once {
                tributary_ingest::Mode::Once
            } else {
                let source = telemetry.clone();
                let source_check: Check = Arc::new(move || {
                    let up = source.source_connected();
                    Box::pin(async move {
                        up.then_some(())
                            .ok_or_else(|| "the source did not answer its last read".to_string())
                    })
                });
                let probed = tables.clone();
                let store_check: Check = Arc::new(move || {
                    let lakes = probed.probe_lakes();
                    Box::pin(async move {
                        let checks = lakes.iter().map(|lake| lake.check_reachable());
                        futures::future::try_join_all(checks)
                            .await
                            .map(drop)
                            .map_err(|e| format!("{e}"))
                    })
                });
                let checks = vec![("object_store", store_check), ("source", source_check)];
                service::serve(
                    config.service.listen_addr,
                    registry,
                    checks,
                    shutdown.clone(),
                )
                .await?;
                tributary_ingest::Mode::Follow
            };
            let work = tributary_ingest::run_tables(
                ingest,
                tables,
                mode,
                shutdown.clone(),
                telemetry.clone(),
            );
            drain_within(&config, shutdown, work).await?;
            tracing::info!(stats = ?telemetry.snapshot(), "ingest stopped");
            Ok(())
        }
        Command::Compact { config, once } => {
            let config = Config::load(&config)?;
            let served = Tables::of(&config);
            if once {
                // One table after the other, each until what was staged in
                // it at the start is compacted.
                return tables::run_each(&config, served.list().await?, |table| async move {
                    anyhow::Ok(
                        tributary_compactor::compact_until_empty(&table.config, &table.lake)
                            .await?,
                    )
                })
                .await;
            }
            let registry = Registry::new();
            let telemetry = tributary_compactor::CompactorTelemetry::register(&registry)?;
            let shutdown = shutdown_signal();
            let checks = vec![("object_store", store_check(&served.home()?))];
            service::serve(
                config.service.listen_addr,
                registry,
                checks,
                shutdown.clone(),
            )
            .await?;
            // Event delivery runs beside compaction (per table, see
            // `tributary_compactor::run`): a sink that is down never holds a
            // round back.
            let work =
                tributary_compactor::run(&served, &config.events, shutdown.clone(), &telemetry);
            drain_within(&config, shutdown.clone(), work).await?;
            tracing::info!("compactor stopped");
            Ok(())
        }
        Command::Optimize {
            config,
            partition,
            table,
        } => {
            let config = Config::load(&config)?;
            let selected = match partition {
                // A partition is a partition of one table.
                Some(_) => {
                    vec![tables::one(&config, table.as_deref(), "optimize --partition").await?]
                }
                None => tables::selected(&config, table.as_deref()).await?,
            };
            tables::run_each(&config, selected, |t| {
                let partition = partition.clone();
                async move {
                    anyhow::Ok(
                        tributary_compactor::optimize(&t.config, &t.lake, partition.as_deref(), 2)
                            .await?,
                    )
                }
            })
            .await
        }
        Command::Vacuum {
            config,
            retention_hours,
            dry_run,
            table,
        } => {
            let config = Config::load(&config)?;
            let retention_hours =
                retention_hours.unwrap_or(config.compact.vacuum_retention_ms as f64 / 3_600_000.0);
            let retention =
                Duration::try_from_secs_f64(retention_hours * 3600.0).map_err(|_| {
                    tributary_config::ConfigError::Invalid {
                        key: "--retention-hours".into(),
                        value: retention_hours.to_string(),
                        reason: "must be a number of hours, 0 or more".into(),
                    }
                })?;
            let selected = tables::selected(&config, table.as_deref()).await?;
            tables::run_each(&config, selected, |t| async move {
                anyhow::Ok(tributary_compactor::vacuum(&t.lake, retention, dry_run).await?)
            })
            .await
        }
        Command::Forget {
            config,
            table,
            subjects,
            keys,
            request_id,
            inbox,
            dry_run,
            audit,
            grace_minutes,
        } => {
            let config = Config::load(&config)?;
            let selected = tables::selected(&config, table.as_deref()).await?;
            let grace = Duration::from_secs(grace_minutes * 60);
            if audit {
                return forget::audit(&config, selected).await;
            }
            if let Some(inbox) = inbox {
                return forget::forget_inbox(&config, &selected, &inbox, dry_run, grace).await;
            }
            let request_id = request_id.unwrap_or_else(|| {
                format!("forget-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ"))
            });
            let input = tributary_compactor::forget::ForgetInput {
                subjects: forget::read_identifiers(subjects.as_deref())?,
                keys: forget::read_identifiers(keys.as_deref())?,
            };
            forget::run_forget(&config, &selected, input, request_id, dry_run, grace).await
        }
        Command::Retention {
            config,
            dry_run,
            grace_minutes,
            as_of,
            table,
        } => {
            let config = Config::load(&config)?;
            // Every table unless one is named: each by its own rules.
            let selected = tables::selected(&config, table.as_deref()).await?;
            tables::run_each(&config, selected, |t| async move {
                let mut options =
                    tributary_compactor::retention::RetentionOptions::new(&t.config, dry_run);
                options.show_progress = true;
                options.lease_wait = Duration::from_millis(t.config.lease_ms * 20);
                if let Some(day) = as_of {
                    options.today = day;
                }
                if let Some(minutes) = grace_minutes {
                    options.grace = Duration::from_secs(minutes * 60);
                }
                anyhow::Ok(
                    tributary_compactor::retention::retention(&t.config, &t.lake, &options).await?,
                )
            })
            .await
        }
        Command::Probe { addr, path } => service::probe(addr, &path).await,
        Command::Registry {
            command: RegistryCommand::Serve { config },
        } => {
            let config = tributary_config::RegistryFile::load(&config)?;
            registry::serve(&config, shutdown_signal()).await
        }
        Command::Events {
            command:
                EventsCommand::List {
                    config,
                    since,
                    limit,
                    table,
                },
        } => {
            let config = Config::load(&config)?;
            // Versions are a table's own: one table at a time.
            let table = tables::one(&config, table.as_deref(), "events list").await?;
            let listing =
                tributary_compactor::events::list(&table.lake, &config.events.sinks, since, limit)
                    .await?;
            print_json(&listing)
        }
        Command::DeadLetters { command } => dead_letters(command).await,
        Command::Quickstart { dir, records } => quickstart::run(&dir, records).await,
    }
}

/// `tributary dead-letters list|show|replay`.
async fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<()> {
    use tributary_compactor::dead_letters::{Filter, list, replay, show};
    match command {
        DeadLettersCommand::List { config, table } => {
            let config = Config::load(&config)?;
            let selected = tables::selected(&config, table.as_deref()).await?;
            tables::run_each(&config, selected, |t| async move {
                anyhow::Ok(list(&t.lake).await?)
            })
            .await
        }
        DeadLettersCommand::Show {
            select,
            limit,
            payload,
        } => {
            let (_, table, selection) = select.open("dead-letters show").await?;
            let filter = Filter {
                selection,
                limit,
                payload,
            };
            for letter in show(&table.lake, &filter).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        DeadLettersCommand::Replay { select, dry_run } => {
            let (config, table, selection) = select.open("dead-letters replay").await?;
            // The table's own flattening (`[tables.<name>.flatten]`).
            let mut ingest = config.require_ingest()?.clone();
            ingest.flatten = config.table(&table.name)?.flatten;
            let report = replay::replay(&table.lake, &ingest, &selection, dry_run).await?;
            print_json(&report)
        }
    }
}

/// Prints a report as one line of JSON on stdout.
fn print_json(report: &impl serde::Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(report).context("cannot print the report")?
    );
    Ok(())
}

/// The readiness check of the lake's object store.
fn store_check(lake: &Lake) -> Check {
    let lake = lake.clone();
    Arc::new(move || {
        let lake = lake.clone();
        Box::pin(async move { lake.check_reachable().await.map_err(|e| format!("{e}")) })
    })
}

/// A drain that did not finish within `service.shutdown_grace_ms`.
#[derive(Debug)]
struct DrainTimedOut(Duration);

impl std::fmt::Display for DrainTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shutdown did not finish within service.shutdown_grace_ms ({} ms); \
             work in flight is abandoned and will be redone on restart",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for DrainTimedOut {}

/// Runs `work` to its end, but once `shutdown` turns true gives it at most
/// the configured grace period.
async fn drain_within<E>(
    config: &Config,
    shutdown: watch::Receiver<bool>,
    work: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    anyhow::Error: From<E>,
{
    let grace = Duration::from_millis(config.service.shutdown_grace_ms);
    drain_for(grace, shutdown, work).await
}

/// Runs `work` to its end, but once `shutdown` turns true gives it at most
/// `grace`.
async fn drain_for<E>(
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
    work: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    anyhow::Error: From<E>,
{
    let work = async { Ok(work.await?) };
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => return result,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    tokio::time::timeout(grace, work)
        .await
        .unwrap_or_else(|_| Err(DrainTimedOut(grace).into()))
}

/// A channel that turns `true` on SIGTERM or SIGINT.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = term => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested; finishing the current batch");
        let _ = tx.send(true);
    });
    rx
}

/// Logs go to stderr: JSON when it is not a terminal (containers), text
/// otherwise. `TRIBUTARY_LOG` sets the filter (default `info`, `warn` for the
/// quickstart, whose output is its summary).
///
/// Whatever the filter says, delta-rs and delta-kernel log at most at INFO:
/// at DEBUG and TRACE they print Delta log batches, whose file statistics hold
/// column values (personal data, possibly), and records must never reach logs.
fn init_tracing(quiet: bool) {
    use std::io::IsTerminal;

    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    // delta-kernel logs an ERROR when it looks for a table that does not exist
    // yet, which is the normal first start, and much detail at INFO; both are
    // kept out of the default.
    let default = if quiet {
        "warn,buoyant_kernel=off"
    } else {
        "info,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake_core=warn"
    };
    let requested = std::env::var("TRIBUTARY_LOG").unwrap_or_else(|_| default.to_string());
    let filter = EnvFilter::try_new(&requested).unwrap_or_else(|e| {
        eprintln!(
            "warning: TRIBUTARY_LOG={requested:?} is not a valid filter ({e}); using {default:?}"
        );
        EnvFilter::new(default)
    });
    // A cap on top of the filter: it lowers delta's levels, never raises them.
    let cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("buoyant_kernel", LevelFilter::INFO)
        .with_target("deltalake_core", LevelFilter::INFO);
    let filter = filter.and(cap);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = if std::io::stderr().is_terminal() {
        layer.with_filter(filter).boxed()
    } else {
        layer.json().with_filter(filter).boxed()
    };
    tracing_subscriber::registry().with(layer).init();
}
