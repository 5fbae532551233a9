//! schema-registry's integration tests, one binary (`cargo test -p
//! schema-registry --test it`). The module-path tags `cargo xtask test`
//! selects by are listed in `kafka-wire/tests/it/main.rs`.

mod confluent_wire;
mod registry_api;
mod tls;
