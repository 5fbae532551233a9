//! An embedded store: an append-only log of processed ids, loaded into
//! memory on open, fsynced on every mark (so a mark survives a crash
//! before the offset commit), compacted when it grows past twice the window.
//!
//! The log's format: one id per line, UTF-8, with `\` written `\\`, a line
//! break `\n` and a NUL `\0`; each line is written with one `write` of the
//! whole line (so a kill between two marks cannot merge their ids), and a
//! failed write is cut off again before the next. On open:
//! - a line that is not UTF-8, holds a NUL byte (a crash may leave a run
//!   of zeros), has an unknown or dangling `\` escape, or is longer than
//!   the id bound is **corrupt**: skipped, counted
//!   ([`FileDedup::corrupt_lines`]) and logged, never fatal;
//! - a last line without its line break (a write a crash cut short, whose
//!   mark never returned) is corrupt too, and is cut off the file.
//!
//! One process at a time: open takes an exclusive advisory lock on the file
//! (`flock`/`LockFileEx`, through the `fs4` crate while the workspace's
//! rust-version is below std's `File::try_lock`, 1.89) held until the
//! store is dropped; a second open, by another process or this one, fails.
//! Advisory: it keeps out other `FileDedup`s, not other writers.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{check_id_len, DedupStore, StoreFuture, DEFAULT_MAX_ID_BYTES};
use crate::retry::HandlerError;

/// Remembers the last `capacity` ids in a file, each at most
/// `max_id_bytes` long. One process at a time (an advisory file lock).
#[derive(Debug, Clone)]
pub struct FileDedup {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Opened for append, locked (exclusive) for as long as it is open.
    file: File,
    capacity: usize,
    max_id_bytes: usize,
    set: HashSet<String>,
    order: VecDeque<String>,
    lines_in_file: usize,
    /// The file's length after its last whole line (bytes).
    len: u64,
    /// A write failed past `len`: cut the file back before the next.
    torn: bool,
    /// Corrupt lines skipped when the log was loaded.
    corrupt_lines: u64,
}

/// One id as one line, line break included.
fn line_of(id: &str) -> String {
    let mut line = String::with_capacity(id.len() + 1);
    for c in id.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\0' => line.push_str("\\0"),
            c => line.push(c),
        }
    }
    line.push('\n');
    line
}

/// The id a line (without its line break) holds; `None` if it is corrupt.
fn id_of(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(match chars.next()? {
                '\\' => '\\',
                'n' => '\n',
                '0' => '\0',
                _ => return None,
            }),
            '\0' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// One line read by [`read_line`].
struct Line {
    /// It ended with a line break (else it is the file's torn tail).
    ended: bool,
    /// It held more than the bound: its bytes were not kept.
    too_long: bool,
    /// Its bytes in the file, line break included.
    bytes: u64,
}

/// Read the next line of `r` into `buf` (without its line break), keeping
/// at most `max` bytes of it: a longer line is skipped without being
/// buffered, so a corrupt file without line breaks costs no memory.
/// `None` at the end of the file.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Option<Line>> {
    buf.clear();
    let (mut bytes, mut too_long) = (0u64, false);
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok((bytes > 0).then_some(Line {
                ended: false,
                too_long,
                bytes,
            }));
        }
        let (part, ended) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], true),
            None => (chunk, false),
        };
        if !too_long {
            if buf.len() + part.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = part.len() + usize::from(ended);
        bytes += used as u64;
        r.consume(used);
        if ended {
            return Ok(Some(Line {
                ended,
                too_long,
                bytes,
            }));
        }
    }
}

/// Take the exclusive advisory lock on `file` (the log at `path`).
///
/// # Errors
/// [`std::io::ErrorKind::WouldBlock`] naming the file when another
/// process (or another open in this one) holds it; the lock call's own
/// error otherwise.
fn lock(file: &File, path: &Path) -> std::io::Result<()> {
    // Named in full: from Rust 1.89 on, std's inherent `File::try_lock`
    // would shadow the trait's method.
    match fs4::FileExt::try_lock(file) {
        Ok(()) => Ok(()),
        Err(fs4::TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "dedup log {}: another process holds it (FileDedup is one process per file: \
                 its advisory lock is held while a store has it open)",
                path.display()
            ),
        )),
        Err(fs4::TryLockError::Error(e)) => Err(std::io::Error::new(
            e.kind(),
            format!("dedup log {}: cannot lock it: {e}", path.display()),
        )),
    }
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

    /// Append `id`'s line with one write, then fsync. A failed write is cut
    /// off (now or before the next append), so it cannot merge with the
    /// next line.
    fn append(&mut self, id: &str) -> std::io::Result<()> {
        if self.torn {
            self.file.set_len(self.len)?;
            self.torn = false;
        }
        let line = line_of(id);
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            self.torn = self.file.set_len(self.len).is_err();
            return Err(e);
        }
        self.len += line.len() as u64;
        self.lines_in_file += 1;
        self.file.sync_data()
    }

    /// Rewrite the file with the current window only (write, fsync,
    /// rename). The new file is locked before it takes the log's name, so
    /// the lock never lapses.
    fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("compacting");
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&tmp)?;
        lock(&file, &tmp)?;
        let content: String = self.order.iter().map(|id| line_of(id)).collect();
        (&file).write_all(content.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename's own durability; not every platform opens directories.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        self.file = file;
        self.len = content.len() as u64;
        self.lines_in_file = self.order.len();
        self.torn = false;
        Ok(())
    }
}

impl FileDedup {
    /// Open (or create) the log at `path`, remembering the last `capacity`
    /// ids, each at most [`DEFAULT_MAX_ID_BYTES`] long.
    ///
    /// # Errors
    /// The file cannot be read, created or locked; another process has it
    /// open ([`std::io::ErrorKind::WouldBlock`], naming the file).
    pub fn open(path: impl AsRef<Path>, capacity: usize) -> std::io::Result<FileDedup> {
        FileDedup::open_bounded(path, capacity, DEFAULT_MAX_ID_BYTES)
    }

    /// [`FileDedup::open`] with ids of at most `max_id_bytes` bytes: a
    /// longer id is a [`HandlerError::NonRetryable`] from `seen` and
    /// `mark` and is not stored; a longer line in the file is corrupt.
    ///
    /// # Errors
    /// As [`FileDedup::open`].
    pub fn open_bounded(
        path: impl AsRef<Path>,
        capacity: usize,
        max_id_bytes: usize,
    ) -> std::io::Result<FileDedup> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        lock(&file, &path)?;
        let mut inner = Inner {
            file,
            path: path.clone(),
            capacity: capacity.max(1),
            max_id_bytes,
            set: HashSet::new(),
            order: VecDeque::new(),
            lines_in_file: 0,
            len: 0,
            torn: false,
            corrupt_lines: 0,
        };
        // An escape takes 2 bytes for 1: a line of a valid id is at most
        // twice the bound.
        let max_line = max_id_bytes.saturating_mul(2);
        let mut reader = BufReader::new(&inner.file);
        let (mut buf, mut number, mut first_corrupt) = (Vec::new(), 0u64, None);
        let mut ids = Vec::new();
        let mut tail = None;
        while let Some(line) = read_line(&mut reader, &mut buf, max_line)? {
            number += 1;
            let id = (line.ended && !line.too_long)
                .then(|| id_of(&buf))
                .flatten()
                .filter(|id| id.len() <= max_id_bytes);
            match id {
                Some(id) => ids.push(id),
                None => {
                    inner.corrupt_lines += 1;
                    first_corrupt.get_or_insert(number);
                }
            }
            if line.ended {
                inner.len += line.bytes;
                inner.lines_in_file += 1;
            } else {
                tail = Some(line.bytes);
            }
        }
        drop(reader);
        for id in ids {
            inner.remember(id);
        }
        if let Some(bytes) = tail {
            // A write cut short: it would merge with the next line.
            inner.file.set_len(inner.len)?;
            tracing::warn!(path = %path.display(), bytes, "dedup log: cut off a last line without its line break (a write a crash cut short)");
        }
        if let Some(first) = first_corrupt {
            tracing::warn!(path = %path.display(), corrupt = inner.corrupt_lines, first_line = first, "dedup log: skipped corrupt lines (not UTF-8, a NUL byte, a bad escape, too long, or cut short)");
        }
        Ok(FileDedup {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Lines of the log skipped as corrupt when it was opened (a torn last
    /// line included); they are dropped from the file at the next
    /// compaction.
    pub fn corrupt_lines(&self) -> u64 {
        self.inner.lock().expect("dedup lock").corrupt_lines
    }
}

impl DedupStore for FileDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let g = self.inner.lock().expect("dedup lock");
        let hit = check_id_len(id, g.max_id_bytes).map(|()| g.set.contains(id));
        Box::pin(async move { hit })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        let inner = self.inner.clone();
        let id = id.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut g = inner.lock().expect("dedup lock");
                check_id_len(&id, g.max_id_bytes)?;
                if g.set.contains(&id) {
                    return Ok(());
                }
                g.append(&id).map_err(|e| {
                    HandlerError::Unavailable(format!("dedup log {}: {e}", g.path.display()))
                })?;
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

    /// A fresh directory for one test's files.
    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filededup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn survives_reopen_and_compacts_to_the_window() {
        let dir = dir("reopen");
        let path = dir.join("ids.log");
        {
            let s = FileDedup::open(&path, 3).unwrap();
            for id in ["a", "b\nwith newline", "c\\d", "nul\0byte"] {
                s.mark(id).await.unwrap();
                s.mark(id).await.unwrap(); // idempotent
            }
        }
        let s = FileDedup::open(&path, 3).unwrap();
        assert_eq!(s.corrupt_lines(), 0);
        for id in ["b\nwith newline", "c\\d", "nul\0byte"] {
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
        // The compacted file is still locked by this store.
        assert!(FileDedup::open(&path, 3).is_err());
        drop(s);
        let s = FileDedup::open(&path, 3).unwrap();
        assert!(s.seen("x9").await.unwrap() && !s.seen("a").await.unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn corrupt_lines_are_skipped_and_counted_and_a_torn_tail_cut_off() {
        let dir = dir("corrupt");
        let path = dir.join("ids.log");
        let mut bytes = b"good-1\n".to_vec();
        bytes.extend_from_slice(b"\xff\xfe not utf-8\n");
        bytes.extend_from_slice(b"\0\0\0\0\0\0\n"); // zeros a crash left
        bytes.extend_from_slice(b"bad escape \\q\n");
        bytes.extend_from_slice(&vec![b'z'; 5000]); // over-long, no line break yet
        bytes.extend_from_slice(b"\ngood-2\n");
        bytes.extend_from_slice(b"torn-par"); // cut short by a crash
        std::fs::write(&path, &bytes).unwrap();

        let s = FileDedup::open(&path, 100).unwrap();
        assert_eq!(s.corrupt_lines(), 5);
        assert!(s.seen("good-1").await.unwrap() && s.seen("good-2").await.unwrap());
        assert!(!s.seen("torn-par").await.unwrap());
        // The torn tail is gone, so the next id gets a line of its own
        // instead of merging into `torn-parnext`.
        s.mark("next").await.unwrap();
        drop(s);
        let text = std::fs::read(&path).unwrap();
        assert!(
            text.ends_with(b"\ngood-2\nnext\n"),
            "{:?}",
            String::from_utf8_lossy(&text[text.len() - 20..])
        );
        let s = FileDedup::open(&path, 100).unwrap();
        assert_eq!(s.corrupt_lines(), 4, "the torn tail was cut off");
        assert!(s.seen("next").await.unwrap() && !s.seen("torn-parnext").await.unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_fails_naming_it() {
        let dir = dir("lock");
        let path = dir.join("ids.log");
        let first = FileDedup::open(&path, 10).unwrap();
        let e = FileDedup::open(&path, 10).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("another process holds it"),
            "{text}"
        );
        drop(first);
        FileDedup::open(&path, 10).expect("free once the first store is dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_over_long_id_is_refused_for_good_and_not_written() {
        let dir = dir("long");
        let path = dir.join("ids.log");
        let s = FileDedup::open_bounded(&path, 10, 8).unwrap();
        let e = s.mark("123456789").await.unwrap_err();
        assert!(
            !e.is_retryable() && e.to_string().contains("9 bytes"),
            "{e}"
        );
        assert!(s.seen("123456789").await.is_err());
        s.mark("12345678").await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"12345678\n");
        drop(s);
        // The default bound is 1 KiB.
        let s = FileDedup::open(&path, 10).unwrap();
        assert!(s.mark(&"x".repeat(DEFAULT_MAX_ID_BYTES + 1)).await.is_err());
        assert!(s.mark(&"x".repeat(DEFAULT_MAX_ID_BYTES)).await.is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
