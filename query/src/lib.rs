//! Tidewatch's query side.
//!
//! Evaluates PromQL ([`engine`]) against the model crate's read seam
//! ([`SeriesRead`](tidewatch_model::seam::SeriesRead)) and serves the Prometheus
//! HTTP API ([`api`]) — query, metadata, status and remote write — with
//! Prometheus' JSON shapes, status codes and error bodies, and Loki's push
//! endpoint ([`loki_push`]) over the
//! [`LogIngest`](tidewatch_model::logs::LogIngest) seam. Nothing here knows
//! about storage: tests run on [`MemSeriesStore`](tidewatch_model::seam::MemSeriesStore).
//! [`logql`] parses and evaluates Loki's query language over the
//! [`LogRead`](tidewatch_model::logs::LogRead) seam ([`logql::evaluate`]);
//! [`logqltest`] runs Loki's conformance scripts against it.

pub mod api;
pub mod ast_json;
pub mod engine;
pub mod error;
pub mod log_search;
pub mod logql;
pub mod logql_template;
pub mod logqltest;
pub mod loki_api;
pub mod loki_params;
pub mod loki_push;
pub mod loki_tail;
pub mod params;
pub mod patterns;
pub mod promqltest;
pub mod stats;

pub use api::{ApiConfig, prometheus_router};
pub use error::{Error, ErrorType};
pub use loki_push::{LokiPushConfig, loki_push_router};
