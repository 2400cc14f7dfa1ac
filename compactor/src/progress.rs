//! Progress of long batch work (`tributary forget`): a bar on a terminal,
//! otherwise a log line at every tenth of the work.

use std::io::{IsTerminal, Write};

/// Counts steps of one phase and shows how far it is.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    terminal: bool,
    logged_tenths: u64,
}

impl Progress {
    /// A phase of `total` steps, described by `what` ("objects verified").
    pub fn new(what: &'static str, total: u64) -> Self {
        Progress {
            what,
            total,
            done: 0,
            terminal: std::io::stderr().is_terminal(),
            logged_tenths: 0,
        }
    }

    /// One more step done.
    pub fn step(&mut self) {
        self.done += 1;
        let total = self.total.max(1);
        if self.terminal {
            const WIDTH: u64 = 30;
            let filled = (self.done * WIDTH / total).min(WIDTH) as usize;
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r{:<22} [{}{}] {}/{}",
                self.what,
                "#".repeat(filled),
                " ".repeat(WIDTH as usize - filled),
                self.done,
                self.total
            );
            if self.done >= self.total {
                let _ = writeln!(err);
            }
            return;
        }
        let tenths = self.done * 10 / total;
        if tenths > self.logged_tenths {
            self.logged_tenths = tenths;
            tracing::info!(done = self.done, total = self.total, "{}", self.what);
        }
    }
}
