//! The ingest in-process against the mock Kafka cluster, a real PostgreSQL database and a
//! loopback install-key server. One test binary, so it links once.

mod broker;
mod edge;
mod flow;
mod forge;
mod harness;
mod refusals;
mod service;
