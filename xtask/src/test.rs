//! `cargo xtask test`: the README's test command and exactly what CI runs.
//!
//! Two tiers, fastest first, each step timed in the closing table:
//! 1. **No service**: fmt, clippy, check-pure, the unit tests (`--lib
//!    --bins`, then the smallest feature set), the doctests, rustdoc and
//!    `cargo package --no-verify` (the tarballs, which the downstream step
//!    builds). A broken invariant fails here in minutes.
//! 2. **Services** (PostgreSQL, Redis, the Python venv, the broker: ours,
//!    or the one `KAFKA_BOOTSTRAP` names): every crate's one integration
//!    binary (`tests/it`), the broker-restart tests alone, the seeds'
//!    systems, `examples/downstream` (an application outside the
//!    workspace, built against the packaged tarballs), the KIP-848 pass
//!    and beside it the Redpanda-shaped pass (the suites with every
//!    connection capped at Redpanda 26.1's versions); then each older
//!    broker's compatibility pass; last, the `cluster::` tests on the
//!    three-node cluster (`cargo xtask cluster`). Which test a pass reruns
//!    is read from its module path (`compat::`, `groups::`, `kip848::`,
//!    `alone::`, `cluster::`; see `kafka-wire/tests/it/main.rs`), never from
//!    a list here (the Redpanda-shaped pass names its suites' modules:
//!    `REDPANDA_SHAPE_TESTS`).
//!
//! Services we started are stopped, even when tests fail. The last line is a
//! plain `summary: N passed, N failed, N skipped`.

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
    fn add(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// The step's summary line, or an error if a test failed.
    fn check(&self) -> anyhow::Result<String> {
        let line = format!(
            "{} passed, {} failed, {} ignored",
            self.passed, self.failed, self.ignored
        );
        if self.failed > 0 {
            bail!("{line}");
        }
        Ok(line)
    }

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
    // The unit tier first, before any service starts: a broken invariant
    // fails in minutes, not after PostgreSQL, Redis and a broker are up.
    let mut outcome = unit_tier(&args, &mut steps, &mut counts);
    // PostgreSQL for the idempotency-store tests: the caller's (PG_URL), or ours.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut started_pg = false;
    if outcome.is_ok() && std::env::var_os("PG_URL").is_none() {
        outcome = timed(&mut steps, "postgres up", || {
            let pg = crate::postgres::up()?;
            started_pg = pg.started_now;
            env.push(("PG_URL".into(), pg.url.clone()));
            Ok(pg.url)
        });
    }
    // Redis for the log-pipeline example: the caller's (REDIS_URL), or ours.
    let mut started_redis = false;
    if outcome.is_ok() && std::env::var_os("REDIS_URL").is_none() {
        outcome = timed(&mut steps, "redis up", || {
            let r = crate::redis::up()?;
            started_redis = r.started_now;
            env.push(("REDIS_URL".into(), r.url.clone()));
            Ok(r.url)
        });
    }
    if outcome.is_ok() {
        outcome = broker_tiers(&args, &env, &mut steps, &mut counts);
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
    record(steps, name, t.elapsed(), result)
}

/// Add a step that ran for `took` with `result` (its summary line, or
/// why it failed) to the summary.
fn record(
    steps: &mut Vec<Step>,
    name: &'static str,
    took: Duration,
    result: anyhow::Result<String>,
) -> anyhow::Result<()> {
    steps.push(Step {
        name,
        took,
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

/// A step that runs `cargo test <cargo_args> -- <test_args>` with `env`,
/// adds its results to `counts`, and fails if a test did.
fn test_step(
    steps: &mut Vec<Step>,
    counts: &mut Counts,
    name: &'static str,
    env: &[(String, String)],
    cargo_args: &[&str],
    test_args: &[&str],
) -> anyhow::Result<()> {
    timed(steps, name, || {
        let cargo_args: Vec<String> = cargo_args.iter().map(|a| a.to_string()).collect();
        let c = cargo_test(env, &cargo_args, test_args)?;
        counts.add(&c);
        c.check()
    })
}

/// Lints and every test that needs no service: the library and binary unit
/// tests (default features, then the smallest feature set) and the
/// doctests; then rustdoc and `cargo package`.
fn unit_tier(args: &Args, steps: &mut Vec<Step>, counts: &mut Counts) -> anyhow::Result<()> {
    if !args.no_lint {
        timed(steps, "fmt", || {
            shell::run(shell::cargo().args(["fmt", "--all", "--check"]))
                .context("run `cargo fmt --all` to fix")?;
            Ok(String::new())
        })?;
        // Before clippy, in the same target dir: on a clean clone every
        // build script of the library crates' tree first runs under
        // CC=/bin/false, and clippy reuses what it checked (it had its own
        // target dir, checked from scratch: 123 s of a cold run).
        timed(steps, "check-pure", || {
            pure::check_pure()?;
            Ok(pure::LIBRARY_CRATES.join(", "))
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
    }
    if !args.cargo_test_args.is_empty() {
        // A filtered run: the filter goes to the broker tiers only.
        return Ok(());
    }
    let none: &[(String, String)] = &[];
    test_step(
        steps,
        counts,
        "unit tests",
        none,
        &["--workspace", "--lib", "--bins"],
        &[],
    )?;
    // The smallest feature set: a left-out codec, TLS or SCRAM is a typed
    // error naming its feature.
    let minimal = [
        "-p",
        "kafka-wire",
        "-p",
        "consumer-core",
        "--no-default-features",
        "--lib",
    ];
    test_step(steps, counts, "unit, minimal", none, &minimal, &[])?;
    test_step(
        steps,
        counts,
        "doctests",
        none,
        &["--workspace", "--doc"],
        &[],
    )?;
    if !args.no_lint {
        timed(steps, "docs", publish::docs)?;
        timed(steps, "package", publish::package)?;
    }
    Ok(())
}

/// Every crate's integration-test binary is `tests/it/main.rs`; its module
/// paths carry the tags below (a libtest name filter selects them, so a
/// test joins a pass by where it is written, never by a list here).
const IT: [&str; 3] = ["--workspace", "--test", "it"];
/// Rerun on every older broker version: behaviour that depends on it.
const COMPAT: &str = "compat::";
/// Rerun under `group.protocol=consumer` (KIP-848): group membership.
const GROUPS: &str = "groups::";
/// Run on Kafka 3.9 with KIP-848 turned on (ConsumerGroupHeartbeat v0).
const KIP848: &str = "kip848::";
/// Ignored in the shared run (they stop or restart the broker), run alone.
const ALONE: &str = "alone::";
/// Ignored in the shared run (they need three nodes in three racks, and
/// kill nodes), run one at a time on the cluster, in the last step.
const CLUSTER: &str = "cluster::";
/// Broker tests mostly wait (for the broker, a session, a rebalance): four
/// at a time on two cores, where libtest would run two.
const THREADS: &str = "--test-threads=4";

/// The services' tiers: the python venv, the main broker's passes (every
/// integration test, the broker-restart tests alone, the seeds' systems,
/// `examples/downstream`, the KIP-848 pass), then each compatibility
/// version's passes.
fn broker_tiers(
    args: &Args,
    extra_env: &[(String, String)],
    steps: &mut Vec<Step>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    // schema-registry's wire-compatibility test runs confluent-kafka's
    // Python serdes: their venv (target/python-venv, made once), passed to
    // the tests as CONFLUENT_PYTHON.
    let mut env = extra_env.to_vec();
    timed(steps, "python venv", || {
        let python = crate::python::confluent_python()?;
        env.push((crate::python::ENV.into(), python.display().to_string()));
        Ok(python.display().to_string())
    })?;

    // The caller's cluster: one run, no other versions to try, and never
    // restarted.
    if let Ok(bootstrap) = std::env::var("KAFKA_BOOTSTRAP") {
        steps.push(Step {
            name: "broker",
            took: Duration::ZERO,
            ok: true,
            detail: format!("using KAFKA_BOOTSTRAP={bootstrap}"),
        });
        let result = main_passes(args, &env, steps, counts, false);
        return result.and(cluster_pass(args, &env, steps, counts));
    }
    // Ours: the main version, then each compatibility version.
    let compat = args
        .compat_versions
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty() && args.cargo_test_args.is_empty());
    for (i, version) in std::iter::once(args.kafka_version.as_str())
        .chain(compat)
        .enumerate()
    {
        let names = if i == 0 {
            ["broker up", "broker down"]
        } else {
            ["compat broker", "compat down"]
        };
        let mut env = env.clone();
        timed(steps, names[0], || {
            let running = broker::up(Engine::Kafka, version)?;
            env.extend(running.env.iter().cloned());
            let how = if running.started_now {
                "started"
            } else {
                "reused"
            };
            Ok(format!(
                "{how} Apache Kafka {version} at {}",
                running.bootstrap()
            ))
        })?;
        let result = if i == 0 {
            main_passes(args, &env, steps, counts, true)
        } else {
            compat_passes(&env, version, steps, counts)
        };
        // Stop the test broker, even when tests failed: it is the test run's
        // own (target/broker-test), also when reused from an interrupted run.
        let _ = timed(steps, names[1], || {
            broker::down(version)?;
            Ok(String::new())
        });
        result?;
    }
    cluster_pass(args, &env, steps, counts)
}

/// The `cluster::` tests (ignored until now) on the three-node cluster,
/// one at a time (they kill and restart nodes): `cluster up` (ours, in
/// target/cluster, beside the single broker), the tests, `cluster down`
/// (even when they failed). Not in a filtered run.
fn cluster_pass(
    args: &Args,
    extra_env: &[(String, String)],
    steps: &mut Vec<Step>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    if !args.cargo_test_args.is_empty() {
        return Ok(());
    }
    let mut env = extra_env.to_vec();
    let up = timed(steps, "cluster up", || {
        let cluster = crate::cluster::up()?;
        env.extend(cluster.env.iter().cloned());
        Ok(format!(
            "{} three nodes at {}",
            if cluster.started_now {
                "started"
            } else {
                "reused"
            },
            cluster.bootstrap()
        ))
    });
    if up.is_err() {
        // Whatever started of it.
        let _ = crate::cluster::down();
        return up;
    }
    let xtask = std::env::current_exe().context("the xtask binary's path")?;
    env.push(("KAFKA_BROKER_CONTROL".into(), xtask.display().to_string()));
    let result = timed(steps, "cluster", || {
        let c = cargo_test(
            &env,
            &IT.map(String::from),
            &["--ignored", "--test-threads=1", CLUSTER],
        )?;
        counts.add(&c);
        // The integration step counted them as ignored; now they ran.
        counts.ignored = counts.ignored.saturating_sub(c.passed + c.failed);
        c.check()
    });
    let _ = timed(steps, "cluster down", || {
        crate::cluster::down()?;
        Ok(String::new())
    });
    result
}

/// On the main broker: every integration test (or the caller's filter);
/// then, unfiltered, the broker-restart tests alone (`restartable`: our own
/// broker), the seeds' systems, `examples/downstream` and the KIP-848 pass.
fn main_passes(
    args: &Args,
    env: &[(String, String)],
    steps: &mut Vec<Step>,
    counts: &mut Counts,
    restartable: bool,
) -> anyhow::Result<()> {
    if !args.cargo_test_args.is_empty() {
        let mut cargo_args = vec!["--workspace"];
        cargo_args.extend(args.cargo_test_args.iter().map(String::as_str));
        return test_step(steps, counts, "tests (filtered)", env, &cargo_args, &[]);
    }
    // Every step runs even when one before it failed (a failure in one tier
    // says nothing about the next); the first failure is returned.
    let mut first_err: Option<anyhow::Error> = None;
    let mut keep = |r: anyhow::Result<()>| {
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    };
    keep(integration_step(
        steps,
        counts,
        "integration",
        env,
        &[THREADS],
    ));
    if restartable {
        let mut env = env.to_vec();
        let xtask = std::env::current_exe().context("the xtask binary's path")?;
        env.push(("KAFKA_BROKER_CONTROL".into(), xtask.display().to_string()));
        // The whole workspace's binaries (the filter leaves the others
        // nothing to run): `-p sim-tests` alone resolves features anew
        // and rebuilt the stack (94 s of a cold CI run).
        // The seeds' systems too: their PostgreSQL restarts.
        let alone: Vec<String> = IT
            .iter()
            .chain(&["--test", "seed_system"])
            .map(|s| s.to_string())
            .collect();
        keep(timed(steps, "restarts, alone", || {
            let c = cargo_test(&env, &alone, &["--ignored", "--test-threads=1", ALONE])?;
            counts.add(&c);
            // The integration step counted them as ignored; now they ran.
            counts.ignored = counts.ignored.saturating_sub(c.passed + c.failed);
            c.check()
        }));
    }
    keep(examples_tests(env, steps, counts));
    keep(timed(steps, "downstream", || {
        // The package step made the tarballs (not under --no-lint).
        let d = downstream(env, !args.no_lint)?;
        counts.add(&d);
        d.check()
    }));
    // KIP-848 on the main version: the group, runtime and semantics
    // suites again under group.protocol=consumer; beside it, the
    // Redpanda-shaped pass.
    keep(kip848_beside_redpanda_shape(steps, counts, env));
    first_err.map_or(Ok(()), Err)
}

/// Two steps at once on the main broker, each in the summary with its own
/// time and counts: "kip-848" (the `groups::` tests under
/// `group.protocol=consumer`, as [`integration_step`]) and
/// "redpanda-shape" ([`redpanda_shape`]). Both mostly wait on the broker,
/// and every test makes its own topics and groups, so the second costs
/// the run little wall-clock time (the kip-848 step took 184 s of a cold
/// run; the Redpanda-shaped tests take about a minute).
fn kip848_beside_redpanda_shape(
    steps: &mut Vec<Step>,
    counts: &mut Counts,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    eprintln!("\n==> kip-848, and beside it redpanda-shape");
    let started = Instant::now();
    let binaries = match build_it_binaries() {
        Ok(b) => b,
        Err(e) => return record(steps, "kip-848", started.elapsed(), Err(e)),
    };
    let kip_env = under_kip848(env);
    let shape_env = under_redpanda_shape(env);
    let kip_args: Vec<String> = [GROUPS, THREADS].map(String::from).to_vec();
    let ((kip, kip_took), (shape, shape_took)) = std::thread::scope(|s| {
        let shape = s.spawn(|| {
            let t = Instant::now();
            (redpanda_shape(&shape_env, &binaries), t.elapsed())
        });
        let kip = run_it(&kip_env, &binaries, &kip_args);
        let kip_took = started.elapsed();
        (
            (kip, kip_took),
            shape.join().expect("the redpanda-shape thread panicked"),
        )
    });
    let mut summary = |name, took, c: anyhow::Result<Counts>| {
        let line = c.and_then(|c| {
            counts.add(&c);
            c.check()
        });
        record(steps, name, took, line)
    };
    let a = summary("kip-848", kip_took, kip);
    let b = summary("redpanda-shape", shape_took, shape);
    a.and(b)
}

/// kafka-wire's test-only setting that caps every connection at a named
/// broker's advertised versions (`kafka-wire/src/versions.rs`).
const VERSION_CAP_ENV: &str = "KAFKA_WIRE_TEST_ONLY_VERSION_CAP";
/// The Redpanda release line whose ApiVersions table the pass uses.
const REDPANDA_SHAPE: &str = "redpanda-26.1";

/// Per crate, the tests of its `it` binary the Redpanda-shaped pass runs:
/// the producer, the transactional producer, the consumer, the classic
/// group (`group.protocol=auto`, which Redpanda answers classic: no
/// ConsumerGroupHeartbeat), the runtime and the exactly-once processor.
/// 48 tests; two at a time on a shared 2-core machine they took 6, 17 and
/// 29 s (kafka-wire, consumer-core, resilience).
const REDPANDA_SHAPE_TESTS: &[(&str, &[&str])] = &[
    (
        "kafka-wire",
        &["compat::producer::", "compat::transactions::"],
    ),
    (
        "consumer-core",
        &["compat::consumer::", "compat::groups::group::"],
    ),
    (
        "resilience",
        &["groups::processor::", "compat::groups::eos::"],
    ),
];

/// Tests of those that cannot pass under the cap, and why (each a
/// `--skip`, a substring of the test's path).
const REDPANDA_SHAPE_SKIP: &[&str] = &[
    // The test reads the offsets with a hand-built OffsetFetch in the v8+
    // layout (`groups`), which a v7 request cannot carry.
    "compat::transactions::offsets_sent_to_a_committed_transaction_are_committed",
];

/// `env` plus the cap at [`REDPANDA_SHAPE`] and `group.protocol=auto`.
fn under_redpanda_shape(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((VERSION_CAP_ENV.into(), REDPANDA_SHAPE.into()));
    env.push(("KAFKA_GROUP_PROTOCOL".into(), "auto".into()));
    env
}

/// The Redpanda-shaped pass: [`REDPANDA_SHAPE_TESTS`] against the main
/// Apache Kafka broker, every connection negotiating as if the broker were
/// Redpanda 26.1 (Produce v7, Fetch v13, OffsetFetch v7, EndTxn v3; no
/// KIP-848, no transactions V2, no share groups). No Redpanda runs in CI
/// (no Docker engine there); this is what Redpanda's versions exercise in
/// the client. Two tests at a time: it runs beside the kip-848 step.
fn redpanda_shape(env: &[(String, String)], binaries: &[ItBinary]) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    for (package, filters) in REDPANDA_SHAPE_TESTS {
        let b = binaries
            .iter()
            .find(|b| b.package == *package)
            .with_context(|| format!("no integration binary for {package}"))?;
        let mut args: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        for skip in REDPANDA_SHAPE_SKIP {
            args.extend(["--skip".to_string(), skip.to_string()]);
        }
        args.push("--test-threads=2".into());
        counts.add(&run_binaries(env, [b], &args)?);
    }
    Ok(counts)
}

/// On an older broker: what depends on the version (`compat::`), then,
/// on Kafka 3.9, KIP-848 turned on at the broker: the `kip848::` tests
/// under `group.protocol=consumer` (ConsumerGroupHeartbeat v0, no
/// server-side regex).
fn compat_passes(
    env: &[(String, String)],
    version: &str,
    steps: &mut Vec<Step>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    test_step(steps, counts, "compat", env, &IT, &[COMPAT, THREADS])?;
    if !version.starts_with("3.9") {
        return Ok(());
    }
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
    eprintln!("\n==> Kafka {version} with {KIP848_ON_3_9}");
    test_step(
        steps,
        counts,
        "compat kip-848",
        &under_kip848(&env),
        &IT,
        &[KIP848, THREADS],
    )
}

/// `env` plus `KAFKA_GROUP_PROTOCOL=consumer`: the tests' helpers then
/// configure `group.protocol=consumer`.
fn under_kip848(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("KAFKA_GROUP_PROTOCOL".into(), "consumer".into()));
    env
}

/// The seeds' systems' end-to-end tests: `examples/<name>/tests/seed_system.rs`,
/// one binary per example, on the main version only.
fn examples_tests(
    env: &[(String, String)],
    steps: &mut Vec<Step>,
    counts: &mut Counts,
) -> anyhow::Result<()> {
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
        return Ok(());
    }
    eprintln!(
        "\n==> the seeds' systems end to end: {}",
        with_tests.join(", ")
    );
    test_step(
        steps,
        counts,
        "examples",
        env,
        &["--workspace", "--test", "seed_system"],
        &[],
    )
}

/// The setting that turns KIP-848 on in Kafka 3.9.
const KIP848_ON_3_9: &str = "group.coordinator.rebalance.protocols=classic,consumer";

/// The application in `examples/downstream/`: its own workspace and
/// Cargo.lock (`--locked`: the committed one), so it builds exactly what an
/// embedder gets (no `[patch]` of the workspace reaches it). Built with
/// `CC=/bin/false CXX=/bin/false`, into the workspace's target directory
/// so that the dependencies the workspace already built are reused.
///
/// With `from_tarballs` (after the package step), against the crates as
/// crates.io would serve them: a copy of it in `target/downstream-packaged/`
/// whose dependencies are the tarballs of `target/package/`, unpacked
/// ([`unpack_tarballs`]). That build is the package step's verification
/// (`cargo package --no-verify`): a file missing from a tarball, or a
/// manifest that only builds inside the workspace, fails here. Without it
/// (`--no-lint`), our crates by path.
fn downstream(env: &[(String, String)], from_tarballs: bool) -> anyhow::Result<Counts> {
    let mut env = env.to_vec();
    env.push(("CC".into(), "/bin/false".into()));
    env.push(("CXX".into(), "/bin/false".into()));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => std::path::PathBuf::from(t),
        None => {
            let target = shell::workspace_root().join("target");
            env.push(("CARGO_TARGET_DIR".into(), target.display().to_string()));
            target
        }
    };
    let mut cargo_args: Vec<String> = Vec::new();
    if from_tarballs {
        let unpacked = unpack_tarballs(&target)?;
        let manifest = copy_against_tarballs(&target, &unpacked)?;
        cargo_args.extend(["--manifest-path".into(), manifest.display().to_string()]);
        // Each crate's dependencies on the others are crates.io ones in its
        // tarball: these, until they are published.
        for (krate, dir) in &unpacked {
            if PATCHED_FROM_TARBALLS.contains(&krate.as_str()) {
                cargo_args.push("--config".into());
                cargo_args.push(format!(
                    "patch.crates-io.{krate}.path=\"{}\"",
                    dir.display()
                ));
            }
        }
    } else {
        cargo_args.extend(["--manifest-path".into(), DOWNSTREAM.into()]);
    }
    cargo_args.push("--locked".into());
    cargo_test(&env, &cargo_args, &[]).with_context(|| {
        format!(
            "{DOWNSTREAM}: if its Cargo.lock is stale (a library crate gained a \
             dependency), run `cargo update --workspace --manifest-path {DOWNSTREAM}` \
             and commit the lock"
        )
    })
}

/// The packaged crates the downstream application builds on, and the
/// path in its manifest that names each (`None`: reached only through
/// another's dependency).
const FROM_TARBALLS: &[(&str, Option<&str>)] = &[
    ("kafka-protocol-bounded", None),
    ("kafka-wire", Some("../../kafka-wire")),
    ("consumer-core", Some("../../consumer-core")),
    ("resilience", Some("../../resilience")),
];

/// Those another packaged crate depends on (a crates.io dependency in its
/// tarball's manifest), patched to their unpacked tarballs. Not
/// resilience: nothing of ours depends on it, and an unused patch would
/// change the lock.
const PATCHED_FROM_TARBALLS: &[&str] = &["kafka-protocol-bounded", "kafka-wire", "consumer-core"];

/// Unpack the newest `target/package/<name>-<version>.crate` of each of
/// [`FROM_TARBALLS`] into `target/package/unpacked/` (made anew); each
/// crate's name and directory.
fn unpack_tarballs(target: &std::path::Path) -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
    let package = target.join("package");
    let out = package.join("unpacked");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let mut unpacked = Vec::new();
    for (krate, _) in FROM_TARBALLS {
        let prefix = format!("{krate}-");
        let mut newest: Option<(std::time::SystemTime, std::path::PathBuf)> = None;
        for entry in std::fs::read_dir(&package)
            .with_context(|| format!("{}: run the package step first", package.display()))?
        {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let version = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".crate"));
            if !version.is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit())) {
                continue;
            }
            let modified = path.metadata()?.modified()?;
            if newest.as_ref().is_none_or(|(m, _)| modified > *m) {
                newest = Some((modified, path));
            }
        }
        let (_, tarball) = newest.with_context(|| {
            format!(
                "no {krate} tarball in {}: run the package step first",
                package.display()
            )
        })?;
        shell::run(
            std::process::Command::new("tar")
                .arg("-xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&out),
        )?;
        let dir = out.join(tarball.file_stem().context("a tarball without a name")?);
        anyhow::ensure!(
            dir.join("Cargo.toml").exists(),
            "{} unpacked no Cargo.toml",
            tarball.display()
        );
        unpacked.push((krate.to_string(), dir));
    }
    Ok(unpacked)
}

/// A copy of `examples/downstream/` in `target/downstream-packaged/` (made
/// anew) whose path dependencies name the `unpacked` tarballs; its manifest.
fn copy_against_tarballs(
    target: &std::path::Path,
    unpacked: &[(String, std::path::PathBuf)],
) -> anyhow::Result<std::path::PathBuf> {
    let from = shell::workspace_root().join("examples/downstream");
    let to = target.join("downstream-packaged");
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(&from, &to)?;
    let manifest = to.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest)?;
    for (krate, path) in FROM_TARBALLS {
        let Some(path) = path else { continue };
        let dir = &unpacked
            .iter()
            .find(|(k, _)| k == krate)
            .context("every crate was unpacked")?
            .1;
        let before = format!("path = \"{path}\"");
        anyhow::ensure!(
            text.contains(&before),
            "{DOWNSTREAM} no longer says `{before}`: update FROM_TARBALLS in xtask/src/test.rs"
        );
        text = text.replace(&before, &format!("path = \"{}\"", dir.display()));
    }
    anyhow::ensure!(
        !text.contains("path = \"../"),
        "{DOWNSTREAM} names a path dependency FROM_TARBALLS does not know"
    );
    std::fs::write(&manifest, text)?;
    Ok(manifest)
}

/// Copy `from` into `to` (made), every file and directory but `target/`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name() == "target" {
            continue;
        }
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &dest)?;
        } else {
            std::fs::copy(&path, &dest).with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

const DOWNSTREAM: &str = "examples/downstream/Cargo.toml";

/// The package whose integration binary runs longest (its scenarios and
/// property tests): [`integration_step`] runs it beside the others.
const LONGEST_IT: &str = "sim-tests";

/// A step that runs every crate's `it` binary with `test_args`: the
/// [`LONGEST_IT`] one beside the others, which run one after another.
///
/// `cargo test` runs the binaries one at a time, so the step took the sum
/// of them, and sim-tests' alone was over half of it (113 of 245 s in a
/// cold run; 134 of 189 s in the KIP-848 pass) while the broker and both
/// cores mostly waited. The binaries are built first (`cargo test
/// --no-run`, the workspace's feature set, as before), then run directly,
/// from their package's directory as cargo would; each one's output is
/// printed whole when it ends.
fn integration_step(
    steps: &mut Vec<Step>,
    counts: &mut Counts,
    name: &'static str,
    env: &[(String, String)],
    test_args: &[&str],
) -> anyhow::Result<()> {
    timed(steps, name, || {
        let binaries = build_it_binaries()?;
        let test_args: Vec<String> = test_args.iter().map(|a| a.to_string()).collect();
        let c = run_it(env, &binaries, &test_args)?;
        counts.add(&c);
        c.check()
    })
}

/// Run `binaries` with `test_args`: the [`LONGEST_IT`] one beside the
/// others, which run one after another; their counts summed.
fn run_it(
    env: &[(String, String)],
    binaries: &[ItBinary],
    test_args: &[String],
) -> anyhow::Result<Counts> {
    let (longest, rest): (Vec<&ItBinary>, Vec<&ItBinary>) =
        binaries.iter().partition(|b| b.package == LONGEST_IT);
    let (a, b) = std::thread::scope(|s| {
        let beside = s.spawn(|| run_binaries(env, longest, test_args));
        let here = run_binaries(env, rest, test_args);
        (beside.join().expect("a test-runner thread panicked"), here)
    });
    let mut c = a?;
    c.add(&b?);
    Ok(c)
}

/// One crate's integration test binary.
struct ItBinary {
    package: String,
    executable: std::path::PathBuf,
    /// The package's directory: cargo runs a test binary from there.
    dir: std::path::PathBuf,
}

/// `cargo test --no-run --workspace --test it`: the binaries it built.
fn build_it_binaries() -> anyhow::Result<Vec<ItBinary>> {
    let mut cmd = shell::cargo();
    cmd.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(IT)
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().context("could not start cargo test --no-run")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let test_target = msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "it"
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
        let (Some(exe), Some(manifest)) =
            (msg["executable"].as_str(), msg["manifest_path"].as_str())
        else {
            continue;
        };
        if !test_target {
            continue;
        }
        let dir = std::path::Path::new(manifest)
            .parent()
            .context("a manifest path without a directory")?
            .to_path_buf();
        let package = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        binaries.push(ItBinary {
            package,
            executable: exe.into(),
            dir,
        });
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building the integration tests failed with {status} (see the output above)");
    }
    binaries.sort_by(|a, b| a.package.cmp(&b.package));
    Ok(binaries)
}

/// Run `binaries` one after another with `test_args`, each one's output
/// printed whole when it ends; their counts summed.
fn run_binaries<'a>(
    env: &[(String, String)],
    binaries: impl IntoIterator<Item = &'a ItBinary>,
    test_args: &[String],
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    for b in binaries {
        let out = std::process::Command::new(&b.executable)
            .args(test_args)
            .current_dir(&b.dir)
            .env("CARGO_MANIFEST_DIR", &b.dir)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Under `xtask test` a broker is always expected: never skip.
            .env("KAFKA_REQUIRE_BROKER", "1")
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not run {}", b.executable.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut c = Counts::default();
        for line in text.lines() {
            c.absorb(line);
        }
        println!(
            "     Running {}/tests/it ({})\n{text}",
            b.package,
            b.executable.display()
        );
        if !out.status.success() && c.failed == 0 {
            bail!(
                "{}'s integration tests failed with {} (see the output above)",
                b.package,
                out.status
            );
        }
        counts.add(&c);
    }
    Ok(counts)
}

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

/// Past this, the summary names the three slowest steps, loudly.
const LOUD_AFTER: Duration = Duration::from_secs(40 * 60);

fn print_summary(steps: &[Step], counts: &Counts, total: Duration) {
    println!("\n==> cargo xtask test summary");
    for s in steps {
        println!(
            "  {:<16} {:>6.1}s  {}  {}",
            s.name,
            s.took.as_secs_f64(),
            if s.ok { "ok  " } else { "FAIL" },
            s.detail
        );
    }
    println!("  {:<16} {:>6.1}s", "total", total.as_secs_f64());
    if total > LOUD_AFTER {
        let mut slow: Vec<&Step> = steps.iter().collect();
        slow.sort_by_key(|s| std::cmp::Reverse(s.took));
        let names: Vec<String> = slow
            .iter()
            .take(3)
            .map(|s| format!("{} ({:.0} s)", s.name, s.took.as_secs_f64()))
            .collect();
        println!(
            "  !!! this run took {:.0} min, past the {} min mark (CI's budget is 30 min cold, \
             90 min hard): the slowest steps are {}",
            total.as_secs_f64() / 60.0,
            LOUD_AFTER.as_secs() / 60,
            names.join(", ")
        );
    }
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
