//! Waiting for a condition instead of sleeping and hoping: a test states
//! what it waits for (a committed offset reached, a member joined), and
//! goes on the moment it holds, or fails after a generous deadline; or it
//! states what must not happen, and fails the moment it does.
//!
//! A child process's output is read as it comes ([`DrainedChild`]), never
//! only at the end, so that a test can wait on it.

use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(50);

/// Wait until `cond` holds (or `timeout` passed); returns whether it did.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`eventually`] for an async condition (one that asks the broker).
pub async fn eventually_async<F: Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`eventually`] for a test without a runtime (one that drives a child
/// process): blocks the thread between looks.
pub fn eventually_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// Check that `cond` keeps holding for all of `duration`; returns false the
/// moment it does not. For a test that proves nothing more happens (no
/// further commit, no rebalance, nothing else consumed, still running):
/// it fails as soon as the thing happens, instead of sleeping the whole
/// time and looking once at the end.
///
/// `cond` is looked at once at the start, then every 50 ms, until
/// `duration` has passed: [`eventually`] waiting for it to fail.
pub async fn stays_for(duration: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !eventually(duration, || !cond()).await
}

/// [`stays_for`] for an async condition (one that asks the broker).
pub async fn stays_for_async<F: Future<Output = bool>>(
    duration: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    !eventually_async(duration, || {
        let looked = cond();
        async move { !looked.await }
    })
    .await
}

/// [`stays_for`] for a test without a runtime (one that drives a child
/// process): blocks the thread between looks.
pub fn stays_for_blocking(duration: Duration, mut cond: impl FnMut() -> bool) -> bool {
    !eventually_blocking(duration, || !cond())
}

/// A child process whose stdout and stderr are read as they come, by a
/// thread per pipe, into buffers the test can look at while it runs
/// ([`stdout`](Self::stdout), [`stderr`](Self::stderr)): a chatty child
/// never blocks on a full pipe while the test waits for something else,
/// and a test waiting for a line waits on the buffer with
/// [`eventually_blocking`]. [`wait`](Self::wait) returns the exit status
/// and the whole output. Dropped unfinished (a failed assertion), the
/// child is killed.
///
/// ```text
/// let child = testkit::DrainedChild::spawn(Command::new("kafka-lab").args(["process", ..]))?;
/// assert!(testkit::eventually_blocking(Duration::from_secs(10), || child.stderr().contains("metrics: ")));
/// let out = child.wait()?;
/// assert!(out.status.success(), "{}", out.all());
/// ```
#[derive(Debug)]
pub struct DrainedChild {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// What a [`DrainedChild`] left: its exit status and everything it wrote.
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// All of its stdout (lossy UTF-8).
    pub stdout: String,
    /// All of its stderr (lossy UTF-8).
    pub stderr: String,
}

impl Finished {
    /// Did it exit 0?
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout followed by stderr, for an assertion's message.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl DrainedChild {
    /// Spawn `cmd` with stdout and stderr piped and drained from now on
    /// (stdin as `cmd` sets it; take a piped one with
    /// [`take_stdin`](Self::take_stdin)).
    pub fn spawn(cmd: &mut Command) -> io::Result<DrainedChild> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(drain(pipe, stdout.clone()));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(drain(pipe, stderr.clone()));
        }
        Ok(DrainedChild {
            child: Some(child),
            stdout,
            stderr,
            readers,
        })
    }

    /// The child's process id (to signal it).
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its stdin, if `cmd` piped it and it was not taken yet: write, then
    /// drop it for end of file.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    /// Its stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        lossy(&self.stdout)
    }

    /// Its stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        lossy(&self.stderr)
    }

    /// Wait for it to exit and for both pipes to close; its status and
    /// whole output.
    pub fn wait(mut self) -> io::Result<Finished> {
        let mut child = self.child.take().expect("not waited for yet");
        drop(child.stdin.take());
        let status = child.wait()?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Ok(Finished {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        })
    }
}

impl Drop for DrainedChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A thread appending whatever `pipe` yields to `into`, as it comes, until
/// end of file.
fn drain(pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        loop {
            let n = match pipe.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    into.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .extend_from_slice(chunk);
                    chunk.len()
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(_) => break,
            };
            pipe.consume(n);
        }
    })
}

fn lossy(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stays_for_fails_the_moment_the_condition_does() {
        let started = Instant::now();
        let mut looks = 0;
        assert!(
            !stays_for(Duration::from_secs(10), || {
                looks += 1;
                looks < 3
            })
            .await
        );
        assert_eq!(looks, 3);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn stays_for_holds_for_the_whole_duration() {
        let started = Instant::now();
        let mut looks = 0;
        assert!(
            stays_for_async(Duration::from_millis(200), || {
                looks += 1;
                async { true }
            })
            .await
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(looks >= 3, "{looks} looks");
    }

    #[test]
    fn a_drained_child_is_read_while_it_runs() {
        // More than a pipe holds (64 KiB) on each stream, then it waits for
        // stdin: undrained, it would block before printing "ready".
        let mut child = DrainedChild::spawn(
            Command::new("sh")
                .arg("-c")
                .arg("head -c 200000 /dev/zero; head -c 200000 /dev/zero >&2; echo ready; read x; echo got $x")
                .stdin(Stdio::piped()),
        )
        .unwrap();
        assert!(eventually_blocking(Duration::from_secs(10), || child
            .stdout()
            .ends_with("ready\n")));
        assert!(stays_for_blocking(Duration::from_millis(100), || !child
            .stdout()
            .contains("got")));
        use std::io::Write;
        child.take_stdin().unwrap().write_all(b"it\n").unwrap();
        let out = child.wait().unwrap();
        assert!(out.success());
        assert!(out.stdout.ends_with("ready\ngot it\n"));
        assert_eq!(out.stderr.len(), 200_000);
    }
}
