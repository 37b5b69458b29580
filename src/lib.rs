//! events-etl loads JSON-lines product event logs from an object store into a
//! warehouse, exactly once. A run **discovers** files under the source prefix that
//! `etl_files` has not recorded ([`discover`]), **cleans** every line into an event, a
//! blank, or a reject with a reason ([`clean`], pure), **stages** gzipped JSON-lines
//! parts and COPY manifests under `<staging>/<load_id>/` ([`stage`]), then in one
//! warehouse transaction **loads** them (COPY into staging tables, insert into `events`
//! from a source deduplicated by id) and **records** the files and the load
//! ([`warehouse`]). An interrupted run leaves nothing recorded, so the next run redoes it.

#![warn(unreachable_pub)]

pub mod app;
pub mod aws;
pub mod check;
pub mod clean;
pub mod config;
pub mod discover;
pub mod event_types;
pub mod failure;
pub mod limits;
pub mod migrate;
pub mod pipeline;
pub mod read;
pub mod report;
pub mod stage;
pub mod store;
pub mod telemetry;
pub mod warehouse;
