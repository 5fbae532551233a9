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
    assert!(stdout.contains("Fetch"), "{stdout}");
    assert!(stdout.contains("topics ("), "{stdout}");
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
}
