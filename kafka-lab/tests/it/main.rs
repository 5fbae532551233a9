//! kafka-lab's integration tests: the CLI from the outside, one binary
//! (`cargo test -p kafka-lab --test it`). The module-path tags `cargo xtask
//! test` selects by are listed in `kafka-wire/tests/it/main.rs`.

mod cli;
mod dlt;
