//! What publishing the library crates needs, checked on every test run:
//! `cargo doc` without warnings, and `cargo package` (the tarballs; that
//! they build, unpacked, as crates.io would serve them, is proved by the
//! `downstream` step, which builds an application against them: see
//! `test.rs`).

use anyhow::Context;

use crate::pure::LIBRARY_CRATES;
use crate::shell;

/// Everything an application pulls from us, in dependency order: the
/// library crates and our fork of kafka-protocol they depend on.
pub const PACKAGED: &[&str] = &[
    "kafka-protocol-bounded",
    "kafka-wire",
    "consumer-core",
    "resilience",
    "schema-registry",
];

/// `cargo doc --no-deps` of the library crates with `RUSTDOCFLAGS=-D
/// warnings`: broken intra-doc links, links to private items, bad HTML.
pub fn docs() -> anyhow::Result<String> {
    let mut cmd = shell::cargo();
    cmd.args(["doc", "--quiet", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    for krate in LIBRARY_CRATES {
        cmd.args(["--package", krate]);
    }
    shell::run(&mut cmd).context("rustdoc warnings in the library crates")?;
    Ok(LIBRARY_CRATES.join(", "))
}

/// `cargo package --no-verify` of [`PACKAGED`]: the tarballs, in
/// `target/package/<name>-<version>.crate`.
///
/// Not verified here: cargo's verification unpacks and builds each
/// tarball alone (136 s of a CI run, the stack built once more); the
/// `downstream` step of `cargo xtask test` builds and tests an application
/// against the unpacked tarballs instead, which proves the same of the
/// crates it uses and costs one build.
///
/// The crates are `publish = false` until we publish, and cargo's local
/// registry overlay (which lets `cargo package` resolve one packaged crate
/// against another that is not on crates.io yet) skips unpublishable
/// packages. So the dependencies between them are resolved through
/// `[patch.crates-io]` entries given on the command line, pointing at their
/// directories: the same sources crates.io would serve once they are
/// published in dependency order. Nothing outside this command sees those
/// patches.
pub fn package() -> anyhow::Result<String> {
    let mut cmd = shell::cargo();
    // `--allow-dirty`: a developer runs this with uncommitted work; CI's
    // clone is clean anyway.
    cmd.args(["package", "--quiet", "--allow-dirty", "--no-verify"]);
    for krate in PACKAGED {
        cmd.args(["--package", krate]);
    }
    for (krate, dir) in [
        ("kafka-protocol-bounded", "vendor/kafka-protocol"),
        ("kafka-wire", "kafka-wire"),
        ("consumer-core", "consumer-core"),
        ("resilience", "resilience"),
    ] {
        cmd.arg("--config")
            .arg(format!("patch.crates-io.{krate}.path=\"{dir}\""));
    }
    shell::run(&mut cmd).context("`cargo package` of the library crates")?;
    Ok(format!(
        "{} (built by the downstream step)",
        PACKAGED.join(", ")
    ))
}
