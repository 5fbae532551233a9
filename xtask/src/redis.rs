//! `cargo xtask redis up|down|status`: a throwaway Redis server on loopback
//! for the examples that aggregate in Redis, from Debian's packages
//! (installed when missing and we are root), with its files under
//! `target/redis`. Nothing is persisted (`--save ""`, no AOF). Writes
//! `target/redis/env` with `REDIS_URL`.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

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
            let r = up()?;
            println!("REDIS_URL={}", r.url);
            Ok(())
        }
        Action::Down => down(),
        Action::Status => {
            match running()? {
                Some(url) => println!("running: REDIS_URL={url}"),
                None => println!("not running"),
            }
            Ok(())
        }
    }
}

#[derive(Debug)]
pub struct RunningRedis {
    pub url: String,
    pub started_now: bool,
}

fn dir() -> PathBuf {
    shell::workspace_root().join("target/redis")
}

fn find_server() -> anyhow::Result<()> {
    if shell::available("redis-server", "--version") {
        return Ok(());
    }
    if shell::apt_install(&["redis-server"])? && shell::available("redis-server", "--version") {
        return Ok(());
    }
    bail!(
        "the examples that aggregate in Redis need redis-server. Install it \
         (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: `brew install redis`), \
         or point REDIS_URL at an existing server"
    )
}

fn tcp_ready(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn port_of(url: &str) -> Option<u16> {
    url.trim_end_matches('/').rsplit(':').next()?.parse().ok()
}

/// The URL of our running server, if it answers.
fn running() -> anyhow::Result<Option<String>> {
    let Ok(text) = fs::read_to_string(dir().join("env")) else {
        return Ok(None);
    };
    let Some(url) = text.lines().find_map(|l| l.strip_prefix("REDIS_URL=")) else {
        return Ok(None);
    };
    Ok(port_of(url).is_some_and(tcp_ready).then(|| url.to_string()))
}

pub fn up() -> anyhow::Result<RunningRedis> {
    if let Some(url) = running()? {
        eprintln!("xtask: reusing Redis ({url})");
        return Ok(RunningRedis {
            url,
            started_now: false,
        });
    }
    find_server()?;
    let dir = dir();
    fs::create_dir_all(&dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    shell::output(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--daemonize", "yes", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(dir.join("server.log")),
    )
    .context("redis-server did not start")?;
    let started = Instant::now();
    while !tcp_ready(port) {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "Redis did not listen on 127.0.0.1:{port} within 20 s; see {}",
                dir.join("server.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("redis://127.0.0.1:{port}/");
    fs::write(dir.join("env"), format!("REDIS_URL={url}\n"))?;
    eprintln!("xtask: Redis up at 127.0.0.1:{port}");
    Ok(RunningRedis {
        url,
        started_now: true,
    })
}

pub fn down() -> anyhow::Result<()> {
    let dir = dir();
    let Ok(pid) = fs::read_to_string(dir.join("redis.pid")) else {
        println!("Redis is not running");
        return Ok(());
    };
    let pid = pid.trim().to_string();
    let _ = Command::new("kill").arg(&pid).status();
    let started = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_file(dir.join("env"));
    let _ = fs::remove_file(dir.join("redis.pid"));
    println!("Redis stopped");
    Ok(())
}
