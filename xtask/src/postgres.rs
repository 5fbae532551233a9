//! `cargo xtask postgres up|down|status`: a throwaway PostgreSQL server on
//! loopback for the idempotency-store tests, from Debian's packages
//! (installed when missing and we are root), with its data under
//! `target/postgres`. Writes `target/postgres/env` with `PG_URL`.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::shell;

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Start the server (or reuse the running one) and print its env.
    Up,
    /// Stop the server this harness started.
    Down,
    /// Say whether it runs.
    Status,
}

pub fn run(action: Action) -> anyhow::Result<()> {
    match action {
        Action::Up => {
            let pg = up()?;
            println!("PG_URL={}", pg.url);
            Ok(())
        }
        Action::Down => down(),
        Action::Status => {
            match running(&dir())? {
                Some(url) => println!("running: PG_URL={url}"),
                None => println!("not running"),
            }
            Ok(())
        }
    }
}

pub struct RunningPostgres {
    pub url: String,
    pub started_now: bool,
}

fn dir() -> PathBuf {
    shell::workspace_root().join("target/postgres")
}

/// The directory holding `initdb` and `pg_ctl`: Debian's
/// `/usr/lib/postgresql/<v>/bin` (newest), else whatever PATH has.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn find_binaries() -> anyhow::Result<PathBuf> {
    if let Some(b) = bin_dir() {
        return Ok(b);
    }
    if shell::available("pg_ctl", "--version") {
        return Ok(PathBuf::new()); // on PATH
    }
    if shell::apt_install(&["postgresql"])? {
        if let Some(b) = bin_dir() {
            return Ok(b);
        }
    }
    bail!(
        "the idempotency-store tests need a PostgreSQL server (initdb, pg_ctl). Install it \
         (Debian/Ubuntu: `sudo apt-get install postgresql`; macOS: `brew install postgresql`), \
         or point PG_URL at an existing server"
    )
}

/// Run a PostgreSQL tool as a user it accepts: the server refuses root,
/// so as root we run it as the `postgres` user Debian's package creates.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let program = if bin.as_os_str().is_empty() {
        PathBuf::from(tool)
    } else {
        bin.join(tool)
    };
    if shell::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn tcp_ready(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

/// The URL of our running server, if it answers.
fn running(dir: &Path) -> anyhow::Result<Option<String>> {
    let Ok(text) = fs::read_to_string(dir.join("env")) else {
        return Ok(None);
    };
    let Some(url) = text.lines().find_map(|l| l.strip_prefix("PG_URL=")) else {
        return Ok(None);
    };
    let port = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap_or("5432");
    Ok(tcp_ready(&format!("127.0.0.1:{port}")).then(|| url.to_string()))
}

pub fn up() -> anyhow::Result<RunningPostgres> {
    let dir = dir();
    if let Some(url) = running(&dir)? {
        eprintln!("xtask: reusing PostgreSQL ({url})");
        return Ok(RunningPostgres {
            url,
            started_now: false,
        });
    }
    let bin = find_binaries()?;
    let data = dir.join("data");
    fs::create_dir_all(&dir)?;
    if shell::is_root() {
        shell::run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        )
        .context("the server runs as the `postgres` user and must own target/postgres")?;
    }
    if !data.join("PG_VERSION").exists() {
        eprintln!("xtask: initdb {}", data.display());
        shell::output(pg_command(&bin, "initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]))?;
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
        dir.display()
    );
    shell::output(
        pg_command(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]),
    )
    .with_context(|| {
        format!(
            "PostgreSQL did not start; see {}",
            dir.join("server.log").display()
        )
    })?;
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    fs::write(dir.join("env"), format!("PG_URL={url}\n"))?;
    eprintln!("xtask: PostgreSQL up at 127.0.0.1:{port}");
    Ok(RunningPostgres {
        url,
        started_now: true,
    })
}

pub fn down() -> anyhow::Result<()> {
    let dir = dir();
    let data = dir.join("data");
    if !data.join("postmaster.pid").exists() {
        println!("PostgreSQL is not running");
        return Ok(());
    }
    let bin = find_binaries()?;
    shell::output(
        pg_command(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"]),
    )?;
    let _ = fs::remove_file(dir.join("env"));
    println!("PostgreSQL stopped");
    Ok(())
}
