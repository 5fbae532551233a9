//! An embedded store: an append-only log of processed ids, loaded into
//! memory on open, fsynced on every mark (so a mark survives a crash
//! before the offset commit), compacted when it grows past twice the window.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DedupStore, StoreFuture};
use crate::retry::HandlerError;

/// Remembers the last `capacity` ids in a file. One process at a time.
#[derive(Debug, Clone)]
pub struct FileDedup {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: File,
    capacity: usize,
    set: HashSet<String>,
    order: VecDeque<String>,
    lines_in_file: usize,
}

/// Ids are stored one per line, with `\` and newlines escaped.
fn escape(id: &str) -> String {
    id.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Inner {
    fn remember(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// Rewrite the file with the current window only (write, fsync, rename).
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("compacting");
        let mut f = File::create(&tmp)?;
        for id in &self.order {
            writeln!(f, "{}", escape(id))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

impl FileDedup {
    /// Open (or create) the log at `path`, remembering the last `capacity` ids.
    ///
    /// # Errors
    /// The file cannot be read or created.
    pub fn open(path: impl AsRef<Path>, capacity: usize) -> std::io::Result<FileDedup> {
        let path = path.as_ref().to_path_buf();
        let mut inner = Inner {
            file: OpenOptions::new().create(true).append(true).open(&path)?,
            path: path.clone(),
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
            lines_in_file: 0,
        };
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            inner.lines_in_file += 1;
            inner.remember(unescape(&line));
        }
        Ok(FileDedup {
            inner: Arc::new(Mutex::new(inner)),
        })
    }
}

impl DedupStore for FileDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let hit = self.inner.lock().expect("dedup lock").set.contains(id);
        Box::pin(async move { Ok(hit) })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let id = id.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut g = inner.lock().expect("dedup lock");
                if g.set.contains(&id) {
                    return Ok(());
                }
                writeln!(g.file, "{}", escape(&id))
                    .and_then(|()| g.file.sync_data())
                    .map_err(|e| {
                        HandlerError::Unavailable(format!("dedup log {}: {e}", g.path.display()))
                    })?;
                g.lines_in_file += 1;
                g.remember(id);
                if g.lines_in_file > 2 * g.capacity {
                    g.compact().map_err(|e| {
                        HandlerError::Unavailable(format!("compacting {}: {e}", g.path.display()))
                    })?;
                }
                Ok(())
            })
            .await
            .map_err(|e| HandlerError::Retryable(format!("dedup task: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen_and_compacts_to_the_window() {
        let dir = std::env::temp_dir().join(format!("filededup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ids.log");
        let _ = std::fs::remove_file(&path);
        {
            let s = FileDedup::open(&path, 3).unwrap();
            for id in ["a", "b\nwith newline", "c\\d"] {
                s.mark(id).await.unwrap();
                s.mark(id).await.unwrap(); // idempotent
            }
        }
        let s = FileDedup::open(&path, 3).unwrap();
        for id in ["a", "b\nwith newline", "c\\d"] {
            assert!(s.seen(id).await.unwrap(), "{id:?} forgotten after reopen");
        }
        for i in 0..10 {
            s.mark(&format!("x{i}")).await.unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(
            lines <= 6,
            "compacted to at most twice the window, got {lines}"
        );
        let s = FileDedup::open(&path, 3).unwrap();
        assert!(s.seen("x9").await.unwrap() && !s.seen("a").await.unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
