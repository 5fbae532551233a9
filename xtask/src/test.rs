//! `cargo xtask test`: the README's test command and exactly what CI runs.
//!
//! fmt, clippy, check-pure, rustdoc and `cargo package` first (fail fast),
//! then the broker (ours, or the one `KAFKA_BOOTSTRAP` names), then every
//! test in the workspace with the broker's env exported, then the tests of
//! `examples/downstream` (an application outside the workspace), then the
//! broker is stopped if we started it, even when tests fail. The last line is
//! a plain `summary: N passed, N failed`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::broker::{self, Engine};
use crate::publish;
use crate::pure;
use crate::shell;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip fmt, clippy, check-pure, docs and package; only run the tests.
    #[arg(long)]
    no_lint: bool,
    /// Apache Kafka version to test against.
    #[arg(long, default_value = broker::KAFKA_VERSION)]
    kafka_version: String,
    /// Then run the suite again against these versions (the client must also
    /// work with Kafka 3.x). Pass an empty value to skip.
    #[arg(long, value_delimiter = ',', default_value = "3.9.1")]
    compat_versions: Vec<String>,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    cargo_test_args: Vec<String>,
}

/// One line of the final summary.
struct Step {
    name: &'static str,
    took: Duration,
    ok: bool,
    detail: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Add the counts of one libtest `test result:` line; other lines are ignored.
    pub fn absorb(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Our own broker (target/broker-test, own ports), never the user's: the
    // suite creates ~120 topics and ~90 groups, and restarts its broker.
    broker::use_instance(broker::TEST_INSTANCE);
    let started = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    let mut counts = Counts::default();
    // PostgreSQL for the idempotency-store tests: the caller's (PG_URL), or ours.
    let mut pg_env: Vec<(String, String)> = Vec::new();
    let mut started_pg = false;
    let mut outcome = if std::env::var_os("PG_URL").is_some() {
        Ok(())
    } else {
        timed(&mut steps, "postgres up", || {
            let pg = crate::postgres::up()?;
            started_pg = pg.started_now;
            pg_env.push(("PG_URL".into(), pg.url.clone()));
            Ok(pg.url)
        })
    };
    // Redis for the log-pipeline example: the caller's (REDIS_URL), or ours.
    let mut started_redis = false;
    if outcome.is_ok() && std::env::var_os("REDIS_URL").is_none() {
        outcome = timed(&mut steps, "redis up", || {
            let r = crate::redis::up()?;
            started_redis = r.started_now;
            pg_env.push(("REDIS_URL".into(), r.url.clone()));
            Ok(r.url)
        });
    }
    if outcome.is_ok() {
        outcome = run_steps(&args, &pg_env, &mut steps, &mut counts);
    }
    if started_redis {
        let _ = timed(&mut steps, "redis down", || {
            crate::redis::down()?;
            Ok(String::new())
        });
    }
    if started_pg {
        let _ = timed(&mut steps, "postgres down", || {
            crate::postgres::down()?;
            Ok(String::new())
        });
    }
    print_summary(&steps, &counts, started.elapsed());
    outcome
}

fn timed(
    steps: &mut Vec<Step>,
    name: &'static str,
    f: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    eprintln!("\n==> {name}");
    let t = Instant::now();
    let result = f();
    steps.push(Step {
        name,
        took: t.elapsed(),
        ok: result.is_ok(),
        detail: match &result {
            Ok(d) => d.clone(),
            Err(e) => format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        },
    });
    result.map(|_| ())
}

fn run_steps(
    args: &Args,
    extra_env: &[(String, String)],
    steps: &mut Vec<Step>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    if !args.no_lint {
        timed(steps, "fmt", || {
            shell::run(shell::cargo().args(["fmt", "--all", "--check"]))
                .context("run `cargo fmt --all` to fix")?;
            Ok(String::new())
        })?;
        timed(steps, "clippy", || {
            // Not --quiet: cargo's own progress shows while it checks.
            shell::run(shell::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            Ok(String::new())
        })?;
        timed(steps, "check-pure", || {
            pure::check_pure()?;
            Ok(pure::LIBRARY_CRATES.join(", "))
        })?;
        timed(steps, "minimal tests", || {
            // The unit tests of the smallest feature set: a left-out codec,
            // TLS or SCRAM is a typed error naming its feature.
            let args = [
                "-p",
                "kafka-wire",
                "-p",
                "consumer-core",
                "--no-default-features",
                "--lib",
            ]
            .map(String::from);
            let c = cargo_test(extra_env, &args, &[])?;
            counts.passed += c.passed;
            counts.failed += c.failed;
            if c.failed > 0 {
                bail!("{} failed with --no-default-features", c.failed);
            }
            Ok(format!("{} passed with --no-default-features", c.passed))
        })?;
        timed(steps, "docs", publish::docs)?;
        timed(steps, "package", publish::package)?;
    }

    // schema-registry's wire-compatibility test runs confluent-kafka's
    // Python serdes: their venv (target/python-venv, made once), passed to
    // the tests as CONFLUENT_PYTHON.
    let mut extra_env = extra_env.to_vec();
    timed(steps, "python venv", || {
        let python = crate::python::confluent_python()?;
        extra_env.push((crate::python::ENV.into(), python.display().to_string()));
        Ok(python.display().to_string())
    })?;
    let extra_env = extra_env.as_slice();

    // The caller's cluster: one run, no other versions to try.
    if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP") {
        steps.push(Step {
            name: "broker",
            took: Duration::ZERO,
            ok: true,
            detail: format!("using KAFKA_BOOTSTRAP={bootstrap}"),
        });
        return timed(steps, "tests", || tests(extra_env, args, "", false, counts));
    }
    // Ours: the main version, then each compatibility version.
    let compat = args
        .compat_versions
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    for (i, version) in std::iter::once(args.kafka_version.as_str())
        .chain(compat)
        .enumerate()
    {
        let names = if i == 0 {
            ["broker up", "tests", "broker down"]
        } else {
            ["compat broker", "compat tests", "compat down"]
        };
        let mut env = extra_env.to_vec();
        let mut started = false;
        timed(steps, names[0], || {
            let running = broker::up(Engine::Kafka, version)?;
            started = running.started_now;
            env.extend(running.env.iter().cloned());
            let how = if started { "started" } else { "reused" };
            Ok(format!(
                "{how} Apache Kafka {version} at {}",
                running.bootstrap()
            ))
        })?;
        let label = if i == 0 {
            String::new()
        } else {
            format!("Kafka {version}: ")
        };
        let mut result = timed(steps, names[1], || tests(&env, args, &label, true, counts));
        if i == 0 && result.is_ok() && args.cargo_test_args.is_empty() {
            // KIP-848 on the main version: the group, runtime and semantics
            // suites again under group.protocol=consumer.
            result = timed(steps, "kip-848 tests", || kip848_tests(&env, counts));
        }
        if i == 0 && result.is_ok() && args.cargo_test_args.is_empty() {
            result = timed(steps, "examples", || examples_tests(&env, counts));
        }
        if i > 0 && result.is_ok() && args.cargo_test_args.is_empty() && version.starts_with("3.9")
        {
            // Kafka 3.9 has KIP-848 off by default (the run above checked
            // that `auto` falls back); turned on, it speaks
            // ConsumerGroupHeartbeat v0.
            result = timed(steps, "compat kip-848", || {
                kip848_on_3_9(&env, version, counts)
            });
        }
        // Stop the test broker, even when tests failed: it is the test run's
        // own (target/broker-test), also when reused from an interrupted run.
        let _ = timed(steps, names[2], || {
            broker::down(version)?;
            Ok(String::new())
        });
        result?;
    }
    Ok(())
}

/// The test binary whose tests stop or restart the broker: ignored in the
/// workspace run (other tests would see the broker vanish), run alone after.
const ALONE: [&str; 4] = ["-p", "sim-tests", "--test", "broker_restart"];

/// `cargo test --workspace` with `env`, then (with `restartable`, on our
/// own broker, without a name filter) the broker-restart tests alone; added
/// to `counts`; fails if a test did.
fn tests(
    env: &[(String, String)],
    args: &Args,
    label: &str,
    restartable: bool,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let mut workspace = vec!["--workspace".to_string()];
    if !label.is_empty() && args.cargo_test_args.is_empty() {
        // A compatibility version: every test target, not the doctests. They
        // never touch a broker, ran on the main version, and compiling each
        // one again costs minutes of CI.
        workspace.push("--tests".to_string());
    }
    workspace.extend(args.cargo_test_args.iter().cloned());
    // The seeds' systems run once, in their own step (see `examples_tests`).
    let mut c = cargo_test(env, &workspace, &["--skip", SEED_SYSTEM])?;
    if restartable && args.cargo_test_args.is_empty() {
        let mut env = env.to_vec();
        let xtask = std::env::current_exe().context("the xtask binary's path")?;
        env.push(("KAFKA_BROKER_CONTROL".into(), xtask.display().to_string()));
        eprintln!("\n==> {label}tests that restart the broker, alone");
        let alone = cargo_test(
            &env,
            &ALONE.map(String::from),
            &["--ignored", "--test-threads=1"],
        )?;
        // They were counted as ignored in the workspace run; now they ran.
        c.ignored = c.ignored.saturating_sub(alone.passed + alone.failed);
        c.passed += alone.passed;
        c.failed += alone.failed;
    }
    if args.cargo_test_args.is_empty() {
        eprintln!("\n==> {label}examples/downstream: an application outside the workspace");
        let d = downstream(env)?;
        c.passed += d.passed;
        c.failed += d.failed;
        c.ignored += d.ignored;
    }
    counts.passed += c.passed;
    counts.failed += c.failed;
    counts.ignored += c.ignored;
    let line = format!(
        "{label}{} passed, {} failed, {} skipped",
        c.passed, c.failed, c.ignored
    );
    if c.failed > 0 {
        bail!("{line}");
    }
    Ok(line)
}

/// The suites that exercise group membership, run again with
/// `KAFKA_GROUP_PROTOCOL=consumer` (the tests' helpers then configure
/// `group.protocol=consumer`). `--workspace` with `--test` filters keeps
/// the workspace run's feature set, so nothing is rebuilt.
const KIP848_SUITES: [&str; 9] = [
    "group",
    "group_protocol",
    "java_interop",
    "processor",
    "offsets",
    "kafka_semantics",
    "live_props",
    "scenarios",
    "eos",
];

fn kip848_tests(env: &[(String, String)], counts: &mut Counts) -> anyhow::Result<String> {
    eprintln!("\n==> the group suites again under group.protocol=consumer (KIP-848)");
    under_kip848(env, &KIP848_SUITES, "group.protocol=consumer", counts)
}

/// `cargo test --workspace --test <suite>…` with `KAFKA_GROUP_PROTOCOL=consumer`
/// (the tests' helpers then configure `group.protocol=consumer`); added to
/// `counts`; fails if a test did. The summary line starts with `label`.
fn under_kip848(
    env: &[(String, String)],
    suites: &[&str],
    label: &str,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let mut env = env.to_vec();
    env.push(("KAFKA_GROUP_PROTOCOL".into(), "consumer".into()));
    let mut args = vec!["--workspace".to_string()];
    for t in suites {
        args.extend(["--test".to_string(), t.to_string()]);
    }
    let c = cargo_test(&env, &args, &[])?;
    counts.passed += c.passed;
    counts.failed += c.failed;
    counts.ignored += c.ignored;
    let line = format!(
        "{label}: {} passed, {} failed ({})",
        c.passed,
        c.failed,
        suites.join(", ")
    );
    if c.failed > 0 {
        bail!("{line}");
    }
    Ok(line)
}

/// The seeds' systems' end-to-end tests: `examples/<name>/tests/seed_system.rs`,
/// every test named `seed_system_*`. They run once, on the main version,
/// instead of in every workspace run (`--skip`); `--workspace --test`
/// keeps the workspace run's feature set, so nothing is rebuilt.
const SEED_SYSTEM: &str = "seed_system_";

fn examples_tests(env: &[(String, String)], counts: &mut Counts) -> anyhow::Result<String> {
    let with_tests: Vec<&str> = crate::example::EXAMPLES
        .iter()
        .filter(|e| {
            shell::workspace_root()
                .join("examples")
                .join(e.name)
                .join("tests/seed_system.rs")
                .exists()
        })
        .map(|e| e.name)
        .collect();
    if with_tests.is_empty() {
        return Ok("no example has tests/seed_system.rs yet".into());
    }
    eprintln!(
        "\n==> the seeds' systems end to end: {}",
        with_tests.join(", ")
    );
    let args = ["--workspace", "--test", "seed_system"].map(String::from);
    let c = cargo_test(env, &args, &[SEED_SYSTEM])?;
    counts.passed += c.passed;
    counts.failed += c.failed;
    counts.ignored += c.ignored;
    let line = format!(
        "{} passed, {} failed ({})",
        c.passed,
        c.failed,
        with_tests.join(", ")
    );
    if c.failed > 0 {
        bail!("{line}");
    }
    Ok(line)
}

/// The setting that turns KIP-848 on in Kafka 3.9.
const KIP848_ON_3_9: &str = "group.coordinator.rebalance.protocols=classic,consumer";

/// Restart the compat broker `version` (3.9) with [`KIP848_ON_3_9`] and run
/// the KIP-848 group tests against it: ConsumerGroupHeartbeat v0, no
/// server-side regex.
fn kip848_on_3_9(
    env: &[(String, String)],
    version: &str,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    broker::down(version)?;
    broker::set_server_properties(&[KIP848_ON_3_9.to_string()]);
    let running = broker::up(Engine::Kafka, version);
    broker::set_server_properties(&[]);
    let running = running?;
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !running.env.iter().any(|(r, _)| r == k))
        .cloned()
        .collect();
    env.extend(running.env.iter().cloned());
    eprintln!(
        "\n==> Kafka {version} with {KIP848_ON_3_9}: the KIP-848 group tests (v0 heartbeats)"
    );
    under_kip848(
        &env,
        &["group_protocol", "member_epoch"],
        &format!("Kafka {version} with KIP-848 on"),
        counts,
    )
}

/// The application in `examples/downstream/`: its own workspace and
/// Cargo.lock (`--locked`: the committed one), our crates by path, so it
/// builds exactly what an embedder gets (no `[patch]` of ours reaches it).
/// Built with `CC=/bin/false CXX=/bin/false`, into the workspace's target
/// directory so that the dependencies the workspace already built are
/// reused.
fn downstream(env: &[(String, String)]) -> anyhow::Result<Counts> {
    let mut env = env.to_vec();
    env.push(("CC".into(), "/bin/false".into()));
    env.push(("CXX".into(), "/bin/false".into()));
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        let target = shell::workspace_root().join("target");
        env.push(("CARGO_TARGET_DIR".into(), target.display().to_string()));
    }
    let manifest = ["--manifest-path", DOWNSTREAM, "--locked"].map(String::from);
    cargo_test(&env, &manifest, &[]).with_context(|| {
        format!(
            "{DOWNSTREAM}: if its Cargo.lock is stale (a library crate gained a \
             dependency), run `cargo update --workspace --manifest-path {DOWNSTREAM}` \
             and commit the lock"
        )
    })
}

const DOWNSTREAM: &str = "examples/downstream/Cargo.toml";

/// Run `cargo test <cargo_args> -- <test_args>`, echoing its output and
/// counting results.
fn cargo_test(
    env: &[(String, String)],
    cargo_args: &[String],
    test_args: &[&str],
) -> anyhow::Result<Counts> {
    let mut cmd = shell::cargo();
    cmd.arg("test").arg("--no-fail-fast").args(cargo_args);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // Under `xtask test` a broker is always expected: never skip.
        .env("KAFKA_REQUIRE_BROKER", "1")
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("could not start cargo test")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut counts = Counts::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.absorb(&line);
    }
    let status = child.wait()?;
    if !status.success() && counts.failed == 0 {
        // A build error or a crashed test binary: no `test result` line says so.
        bail!("cargo test failed with {status} (see the output above)");
    }
    Ok(counts)
}

fn print_summary(steps: &[Step], counts: &Counts, total: Duration) {
    println!("\n==> cargo xtask test summary");
    for s in steps {
        println!(
            "  {:<12} {:>6.1}s  {}  {}",
            s.name,
            s.took.as_secs_f64(),
            if s.ok { "ok  " } else { "FAIL" },
            s.detail
        );
    }
    println!("  {:<12} {:>6.1}s", "total", total.as_secs_f64());
    // The plain closing line CI reads.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_result_lines() {
        let mut c = Counts::default();
        c.absorb("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.absorb("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        c.absorb("running 3 tests");
        assert_eq!(
            c,
            Counts {
                passed: 13,
                failed: 2,
                ignored: 3
            }
        );
    }
}
