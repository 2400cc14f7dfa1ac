//! The `tributary` binary: a thin command line over the library crates.
//!
//! Exit codes: 0 success (or a drained shutdown after SIGTERM/SIGINT),
//! 1 a runtime error, 2 a bad command line or configuration.

mod quickstart;
mod sample;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use tributary_config::Config;
use tributary_lake::Lake;

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
        /// Read what the source holds now, stage it, and exit (files are
        /// treated as complete) instead of following it.
        #[arg(long)]
        once: bool,
    },
    /// Merge staged row files into the Delta table.
    Compact {
        /// The TOML configuration file (see config/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Compact everything staged now and exit instead of running forever.
        #[arg(long)]
        once: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Quickstart { .. }));
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
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let config_error = e.chain().any(|c| c.is::<tributary_config::ConfigError>());
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest { config, once } => {
            let config = Config::load(&config)?;
            let ingest = config.require_ingest()?;
            let lake = Lake::open(&config.lake)?;
            let stats = Arc::new(tributary_ingest::IngestStats::default());
            let mode = if once {
                tributary_ingest::Mode::Once
            } else {
                tributary_ingest::Mode::Follow
            };
            tributary_ingest::run(ingest, &lake, mode, shutdown_signal(), stats.clone()).await?;
            tracing::info!(stats = ?stats.snapshot(), "ingest stopped");
            Ok(())
        }
        Command::Compact { config, once } => {
            let config = Config::load(&config)?;
            let lake = Lake::open(&config.lake)?;
            if once {
                let metrics =
                    tributary_compactor::compact_until_empty(&config.compact, &lake).await?;
                println!(
                    "{}",
                    serde_json::to_string(&metrics).context("cannot print the report")?
                );
                return Ok(());
            }
            let mut shutdown = shutdown_signal();
            let interval = std::time::Duration::from_millis(config.compact.interval_ms);
            while !*shutdown.borrow() {
                let metrics = tributary_compactor::compact_round(&config.compact, &lake).await?;
                if metrics.files_compacted == 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            Ok(())
        }
        Command::Quickstart { dir, records } => quickstart::run(&dir, records).await,
    }
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
fn init_tracing(quiet: bool) {
    use std::io::IsTerminal;
    // delta-kernel logs an ERROR when it looks for a table that does not exist
    // yet, which is the normal first start, and much detail at INFO; both are
    // kept out of the default.
    let default = if quiet {
        "warn,buoyant_kernel=off"
    } else {
        "info,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off,deltalake_core=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRIBUTARY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}
