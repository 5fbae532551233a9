//! The CLI from the outside, as a user runs it.

use std::process::Command;

fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kafka-lab"))
}

#[test]
fn help_lists_the_subcommands() {
    let out = lab().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("check"), "{text}");
}

#[test]
fn scenario_help_lists_every_scenario() {
    let out = lab().args(["scenario", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in sim_tests::scenarios::NAMES {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    let out = lab().args(["scenario", "no-such"]).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("corrupt-batch"), "{text}");
}

#[test]
fn check_prints_broker_versions_and_topics() {
    let broker = testkit::require_broker!();
    let out = lab()
        .args(["--bootstrap", &broker.bootstrap, "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("brokers (1)"), "{stdout}");
    assert!(stdout.contains("APIs negotiated"), "{stdout}");
    assert!(
        !stdout.contains("Fetch"),
        "no version table by default: {stdout}"
    );
    assert!(stdout.contains("topics ("), "{stdout}");
    let out = lab()
        .args(["--bootstrap", &broker.bootstrap, "check", "--versions"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Fetch"), "{stdout}");
}

#[test]
fn unknown_property_is_named_in_the_error() {
    let out = lab()
        .args([
            "--bootstrap",
            "127.0.0.1:1",
            "-X",
            "bootstrap.srevers=x",
            "check",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bootstrap.srevers"), "{stderr}");
    assert!(
        stderr.contains("did you mean `bootstrap.servers`?"),
        "{stderr}"
    );
}

#[test]
fn a_consumer_or_producer_property_under_x_points_to_c_or_p() {
    for (kv, flag) in [
        ("group.id=g", "-C group.id=g"),
        ("linger.ms=5", "-P linger.ms=5"),
    ] {
        let (ok, out) = run(&["--bootstrap", "127.0.0.1:1", "-X", kv, "check"], None);
        assert!(!ok, "{out}");
        assert!(out.contains(flag), "{kv}: {out}");
    }
}

#[test]
fn a_missing_topic_or_group_is_an_error_that_says_so() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.as_str();
    let topic = testkit::unique_name("cli-missing");
    for args in [
        vec![
            "-b",
            b,
            "consume",
            "--topic",
            &topic,
            "--partitions",
            "0",
            "--idle-exit-ms",
            "500",
        ],
        vec![
            "-b",
            b,
            "consume",
            "--topic",
            &topic,
            "--group",
            "g",
            "--idle-exit-ms",
            "500",
        ],
        vec![
            "-b",
            b,
            "process",
            "--topic",
            &topic,
            "--group",
            "g",
            "--seconds",
            "1",
        ],
    ] {
        let (ok, out) = run(&args, None);
        assert!(!ok, "{args:?} exited 0: {out}");
        assert!(
            out.contains(&format!("topic {topic:?} does not exist")),
            "{args:?}: {out}"
        );
        // The harness runs with auto.create.topics.enable=false.
        assert!(out.contains("auto-creation is off"), "{args:?}: {out}");
        assert!(!out.contains("consumed 0 records"), "{out}");
    }
    let group = testkit::unique_name("cli-missing-group");
    let (ok, out) = run(&["-b", b, "groups", "describe", &group], None);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("consumer group {group:?} does not exist")),
        "{out}"
    );
}

#[test]
fn a_refused_topic_creation_shows_the_brokers_own_message() {
    let broker = testkit::require_broker!();
    let topic = testkit::unique_name("cli-rf3");
    let (ok, out) = run(
        &[
            "-b",
            &broker.bootstrap,
            "topics",
            "create",
            &topic,
            "--replication-factor",
            "3",
        ],
        None,
    );
    assert!(!ok, "{out}");
    assert!(out.contains("InvalidReplicationFactor"), "{out}");
    // The broker's explanation, not just the code's name.
    assert!(out.contains("the broker says:"), "{out}");
    assert!(out.contains("broker(s)"), "{out}");
}

fn run_ok(args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out) = run(args, stdin);
    assert!(ok, "{args:?}\n{out}");
    out
}

/// Run the CLI; whether it exited 0, and stdout followed by stderr.
fn run(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = lab()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), stdout + &stderr)
}

#[test]
fn topics_and_produce_round_trip() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.as_str();
    let topic = testkit::unique_name("cli");
    let out = run_ok(
        &[
            "--bootstrap",
            b,
            "topics",
            "create",
            &topic,
            "--partitions",
            "3",
            "--config",
            "retention.ms=60000",
        ],
        None,
    );
    assert!(out.contains("created"), "{out}");
    assert!(run_ok(&["--bootstrap", b, "topics", "list"], None).contains(&topic));

    let out = run_ok(
        &[
            "--bootstrap",
            b,
            "produce",
            "--topic",
            &topic,
            "--key-prefix",
            "k",
            "--distinct-keys",
            "2",
            "--header",
            "src=cli",
            "--json",
        ],
        Some("one\ntwo\nthree\n"),
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("\"key\":\"k0\"") && lines[1].contains("\"key\":\"k1\""),
        "{out}"
    );
    assert!(out.contains("produced 3 records"), "{out}");

    let out = run_ok(
        &[
            "--bootstrap",
            b,
            "produce",
            "--topic",
            &topic,
            "--count",
            "50",
            "--size",
            "10",
            "--compression",
            "zstd",
            "--transactional-id",
            &testkit::unique_name("cli-tx"),
            "--abort",
        ],
        None,
    );
    assert!(out.contains("transaction aborted"), "{out}");
    assert!(run_ok(&["--bootstrap", b, "topics", "delete", &topic], None).contains("deleted"));
}

#[test]
fn consume_as_a_group_commits_and_groups_describe_shows_lag() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.as_str();
    let topic = testkit::unique_name("cli-consume");
    let group = testkit::unique_name("cli-group");
    run_ok(
        &[
            "--bootstrap",
            b,
            "topics",
            "create",
            &topic,
            "--partitions",
            "2",
        ],
        None,
    );
    run_ok(
        &[
            "--bootstrap",
            b,
            "produce",
            "--topic",
            &topic,
            "--partition",
            "0",
            "--header",
            "h=v",
        ],
        Some("a\nb\nc\nd\n"),
    );
    let out = run_ok(
        &[
            "--bootstrap",
            b,
            "consume",
            "--topic",
            &topic,
            "--group",
            &group,
            "--max",
            "3",
            "--json",
            "--commit",
        ],
        None,
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("\"value\":\"a\"") && lines[0].contains("\"headers\":{\"h\":\"v\"}"),
        "{out}"
    );
    let described = run_ok(&["--bootstrap", b, "groups", "describe", &group], None);
    let row = described
        .lines()
        .find(|l| l.starts_with(&format!("{topic}-0")))
        .unwrap_or_else(|| panic!("{described}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[1..4],
        ["3", "4", "1"],
        "committed 3, end 4, lag 1: {row}"
    );
    assert!(run_ok(&["--bootstrap", b, "groups", "list"], None).contains(&group));
    // Reading partitions directly, until idle.
    let out = run_ok(
        &[
            "--bootstrap",
            b,
            "consume",
            "--topic",
            &topic,
            "--partitions",
            "0,1",
            "--idle-exit-ms",
            "1500",
        ],
        None,
    );
    assert!(out.contains("consumed 4 records"), "{out}");
}

#[test]
fn process_dead_letters_poison_and_serves_prometheus_metrics() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.as_str();
    let topic = testkit::unique_name("lab-process");
    run_ok(
        &["-b", b, "topics", "create", &topic, "--partitions", "1"],
        None,
    );
    run_ok(
        &["-b", b, "produce", "--topic", &topic, "--count", "200"],
        None,
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let group = testkit::unique_name("lab-process");
    let child = lab()
        .args([
            "-b",
            b,
            "process",
            "--topic",
            &topic,
            "--group",
            &group,
            "--poison-every",
            "50",
            "--seconds",
            "6",
            "--metrics-addr",
            &addr,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Offsets 0, 50, 100, 150 are poison.
    assert!(stdout.contains("196 handled"), "{stdout}");
    assert!(stdout.contains("4 dead-lettered"), "{stdout}");
    assert!(
        metrics.contains("resilience_records_dead_lettered_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("resilience_handler_seconds_count"),
        "{metrics}"
    );
    let dlt = run_ok(
        &[
            "-b",
            b,
            "consume",
            "--topic",
            &format!("{topic}.DLT"),
            "--partitions",
            "0",
            "--idle-exit-ms",
            "2000",
            "--json",
        ],
        None,
    );
    assert_eq!(
        dlt.lines().filter(|l| l.starts_with('{')).count(),
        4,
        "{dlt}"
    );
}

#[test]
fn produce_splits_batches_too_large_for_the_topic_and_fails_only_a_record_too_large() {
    let broker = testkit::require_broker!();
    let b = broker.bootstrap.as_str();
    let offsets = |topic: &str| -> Vec<i64> {
        let out = run_ok(
            &[
                "-b",
                b,
                "consume",
                "--topic",
                topic,
                "--partitions",
                "0",
                "--json",
                "--idle-exit-ms",
                "1500",
            ],
            None,
        );
        out.lines()
            .filter_map(|l| l.split("\"offset\":").nth(1))
            .map(|rest| rest.split([',', '}']).next().unwrap().parse().unwrap())
            .collect()
    };
    let create = |prefix: &str| {
        let topic = testkit::unique_name(prefix);
        run_ok(
            &[
                "-b",
                b,
                "topics",
                "create",
                &topic,
                "--partitions",
                "1",
                "--config",
                "max.message.bytes=65536",
            ],
            None,
        );
        topic
    };
    // The repro: one 200 KB linger batch for a 64 KiB limit.
    let topic = create("cli-smallmax");
    let out = run_ok(
        &[
            "-b",
            b,
            "produce",
            "--topic",
            &topic,
            "--count",
            "200",
            "--size",
            "1000",
            "-P",
            "batch.size=1048576",
            "-P",
            "linger.ms=200",
        ],
        None,
    );
    assert!(out.contains("produced 200 records"), "{out}");
    assert_eq!(offsets(&topic), (0..200).collect::<Vec<i64>>());

    // A 100 KB line among small ones: it alone fails, the run says so.
    let topic = create("cli-smallmax-big");
    let mut input: String = (0..30).map(|i| format!("small-{i}\n")).collect();
    input.push_str(&"B".repeat(100_000));
    input.push('\n');
    input.extend((30..60).map(|i| format!("small-{i}\n")));
    let (ok, out) = run(
        &[
            "-b",
            b,
            "produce",
            "--topic",
            &topic,
            "-P",
            "batch.size=1048576",
            "-P",
            "linger.ms=200",
        ],
        Some(&input),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("record #30 was not delivered"), "{out}");
    assert!(out.contains(&format!("{topic}-0")), "{out}");
    assert!(out.contains("max.message.bytes"), "{out}");
    assert!(out.contains("1 of 61 records not delivered"), "{out}");
    assert_eq!(offsets(&topic), (0..60).collect::<Vec<i64>>());
}
