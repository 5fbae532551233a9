//! The `tracing` subscriber: warnings to stderr (no ANSI colour unless
//! stderr is a terminal), or for `scenario`, whose faults are injected on
//! purpose and log warnings by design, to a file whose lines are counted.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::Command;

/// The log file of a `scenario` run and how many lines went to it.
pub struct LogFile {
    pub path: PathBuf,
    lines: Arc<AtomicU64>,
}

impl LogFile {
    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }
}

/// A file writer that counts the lines it writes.
#[derive(Clone)]
struct Counting {
    file: Arc<Mutex<std::fs::File>>,
    lines: Arc<AtomicU64>,
}

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.lock().expect("log file lock").write_all(buf)?;
        let newlines = buf.iter().filter(|b| **b == b'\n').count();
        self.lines.fetch_add(newlines as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().expect("log file lock").flush()
    }
}

/// Set up the subscriber for `command`: `RUST_LOG` (default `warn`) to
/// stderr; for `scenario` without `RUST_LOG`, to a file (returned).
pub fn init(command: &Command) -> anyhow::Result<Option<LogFile>> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let to_file = match command {
        Command::Scenario { log_file, .. } if std::env::var_os("RUST_LOG").is_none() => Some(
            log_file
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("kafka-lab-scenarios.log")),
        ),
        _ => None,
    };
    let Some(path) = to_file else {
        tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
        return Ok(None);
    };
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the log file {}", path.display()))?;
    let lines = Arc::new(AtomicU64::new(0));
    let writer = Counting {
        file: Arc::new(Mutex::new(file)),
        lines: lines.clone(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    Ok(Some(LogFile { path, lines }))
}
