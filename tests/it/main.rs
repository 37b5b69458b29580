//! The integration tests, as one test crate: one binary links the AWS SDKs once, and the
//! tests share one throwaway PostgreSQL (each test works in a schema of its own).
//!
//! - `cleaning_contract`: poison and edge values through the real binary into PostgreSQL;
//! - `config`: configuration, environment overrides and exit codes through the binary;
//! - `dialects`: both SQL dialects end with the same tables; no TRUNCATE;
//! - `end_to_end`: the real binary on S3 and PostgreSQL (and Redshift through the stand-in);
//! - `failure_classes`: transient, per-object and systemic failures, quarantine as an
//!   alarm that clears, lost files, and keys SQL would misread, through the binary;
//! - `event_types`: issue 10's per-type contracts, typed views and event catalog, through
//!   the binary on both warehouses;
//! - `harness`: the test harness itself (throwaway PostgreSQL, in-process S3);
//! - `pipeline`: the pipeline library on local files;
//! - `postgres_tls`: TLS to PostgreSQL, every sslmode against a server with ssl = on;
//! - `postgres_version`: a server older than 15 is refused;
//! - `redshift_adapter`: the Data API adapter's failure modes, the Redshift grammar gate,
//!   SQL mutations that would break Redshift;
//! - `redshift_data_standin`: the Data API stand-in is at least as strict as Redshift;
//! - `store_conformance`, `warehouse_conformance`: one suite per trait, every adapter.

#[path = "../support/mod.rs"]
mod support;

mod cleaning_contract;
mod config;
mod deploy;
mod dialects;
mod end_to_end;
mod event_types;
mod failure_classes;
mod harness;
mod operations;
mod pipeline;
mod postgres_tls;
mod postgres_version;
mod promises;
mod quarantine;
mod redshift_adapter;
mod redshift_data_standin;
mod store_conformance;
mod warehouse_conformance;
