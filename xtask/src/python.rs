//! The Python reference peer for the schema-registry wire-compatibility
//! test: a venv in `target/python-venv` with confluent-kafka's Avro
//! serdes, created on first use (`python3 -m venv` + pip from PyPI),
//! reused while it imports them. Its interpreter reaches the tests as
//! `CONFLUENT_PYTHON` (schema-registry/tests/it/confluent_wire.rs).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::shell::{self, workspace_root};

/// The environment variable the compatibility test reads.
pub const ENV: &str = "CONFLUENT_PYTHON";

/// What pip installs (the version the test was written against).
const REQUIREMENT: &str = "confluent-kafka[avro,schemaregistry]==2.16.1";

/// The import that proves the venv is usable.
const PROBE: &str = "import confluent_kafka.schema_registry.avro, \
                     confluent_kafka.schema_registry._sync.mock_schema_registry_client";

/// The venv's interpreter, creating the venv if missing or broken.
pub fn confluent_python() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join("target/python-venv");
    let python = venv.join("bin/python");
    let usable = |p: &PathBuf| {
        Command::new(p)
            .args(["-c", PROBE])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if usable(&python) {
        return Ok(python);
    }
    eprintln!("creating {} with {REQUIREMENT}", venv.display());
    shell::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        .context("python3 -m venv failed (is python3 with venv installed?)")?;
    shell::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        REQUIREMENT,
    ]))
    .context("pip install of confluent-kafka failed")?;
    anyhow::ensure!(
        usable(&python),
        "{} cannot import confluent-kafka's Avro serdes",
        python.display()
    );
    Ok(python)
}
