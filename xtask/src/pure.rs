//! `cargo xtask check-pure`: the library crates need no C toolchain.
//!
//! Two independent checks, because each alone can be fooled:
//! 1. the dependency tree (normal + build edges, every target platform) names
//!    none of the crates that compile or link C;
//! 2. a fresh `cargo check` of the library crates (every build script runs,
//!    which is where C would be compiled) succeeds with `CC` and `CXX` set to
//!    `/bin/false`, in its own target directory so nothing cached hides a C
//!    build. The downstream application's tests then build and link for real
//!    with the same settings.

use std::time::Instant;

use anyhow::bail;

use crate::shell;

/// The crates users embed. Everything else (lab, tests, xtask, bench) may use C.
pub const LIBRARY_CRATES: &[&str] = &[
    "kafka-wire",
    "consumer-core",
    "resilience",
    "schema-registry",
];

/// Crates that build or link C/C++ code, or need a system library.
pub const FORBIDDEN: &[&str] = &[
    "cc",
    "cmake",
    "pkg-config",
    "bindgen",
    "ring",
    "aws-lc-sys",
    "aws-lc-rs",
    "openssl-sys",
    "zstd-sys",
    "lz4-sys",
];

/// Names of forbidden crates in `cargo tree --prefix none` output.
pub fn forbidden_in_tree(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN.contains(name))
        .map(str::to_string)
        .collect();
    found.sort();
    found.dedup();
    found
}

pub fn check_pure() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut tree_cmd = shell::cargo();
    tree_cmd.args([
        "tree",
        "--edges",
        "normal,build",
        "--prefix",
        "none",
        "--target",
        "all",
        // Optional features too (resilience's `postgres`): all must be pure.
        "--all-features",
    ]);
    for krate in LIBRARY_CRATES {
        tree_cmd.args(["--package", krate]);
    }
    let tree = shell::output(&mut tree_cmd)?;
    let found = forbidden_in_tree(&tree);
    if !found.is_empty() {
        bail!(
            "check-pure: the library crates depend on {} (C toolchain or system library). \
             Find the path with `cargo tree -e normal,build -i <crate> -p kafka-wire` and \
             switch to a pure-Rust alternative",
            found.join(", ")
        );
    }
    println!(
        "check-pure: dependency tree of {} is free of {}",
        LIBRARY_CRATES.join(", "),
        FORBIDDEN.join("/")
    );

    eprintln!(
        "check-pure: checking the library crates with CC=/bin/false (build scripts run, \
         as in a build; `cargo xtask test` runs this before clippy, so on a clean clone \
         every build script's first run is under CC=/bin/false)"
    );
    // `cargo check` runs every build script (where a C compiler would be
    // called) and compiles proc macros, as a build does; it skips only the
    // library crates' code generation, which never calls a C compiler. The
    // downstream application's tests do the full build with CC=/bin/false.
    // Not --quiet: cargo's own progress shows while it checks.
    let mut build = shell::cargo();
    build
        .args(["check", "--all-features"])
        .env("CC", "/bin/false")
        .env("CXX", "/bin/false");
    for krate in LIBRARY_CRATES {
        build.args(["--package", krate]);
    }
    shell::run(&mut build).map_err(|e| {
        anyhow::anyhow!(
            "check-pure: building the library crates with CC=/bin/false CXX=/bin/false failed, \
             so something needs a C compiler: {e}"
        )
    })?;
    println!(
        "check-pure: library crates check (build scripts included) with CC=/bin/false CXX=/bin/false ({:.0} s)",
        started.elapsed().as_secs_f64()
    );

    // The smallest build an embedder can choose: no TLS, no SCRAM, no codecs.
    eprintln!("check-pure: the same with --no-default-features");
    let mut minimal = shell::cargo();
    minimal
        .args(["check", "--no-default-features"])
        .env("CC", "/bin/false")
        .env("CXX", "/bin/false");
    for krate in LIBRARY_CRATES {
        minimal.args(["--package", krate]);
    }
    shell::run(&mut minimal).map_err(|e| {
        anyhow::anyhow!(
            "check-pure: the library crates do not build with --no-default-features \
             (a feature-gated item is used unconditionally): {e}"
        )
    })?;
    println!("check-pure: --no-default-features checks too");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_forbidden_crates_by_exact_name() {
        let tree = "kafka-wire v0.1.0 (/w/kafka-wire)\n\
                    bytes v1.10.0\n\
                    cc v1.2.3\n\
                    ring v0.17.8\n\
                    ccc v0.1.0\n\
                    cc-utils v0.1.0\n\
                    zstd-sys v2.0.0+zstd.1.5.6\n";
        assert_eq!(forbidden_in_tree(tree), vec!["cc", "ring", "zstd-sys"]);
    }

    #[test]
    fn clean_tree_passes() {
        let tree = "kafka-wire v0.1.0 (/w)\nlz4_flex v0.11.3\nruzstd v0.8.1\n";
        assert!(forbidden_in_tree(tree).is_empty());
    }
}
