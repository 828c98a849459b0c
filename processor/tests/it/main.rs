//! The processor against the mock Kafka cluster and a real Postgres database.

mod acting_user;
mod base_urls;
mod batching;
mod dead_letters;
mod forge;
mod groups;
mod lifecycle;
mod mid_batch;
mod ordering;
mod parking;
mod redelivery;
mod retries;
mod support;
mod writes;
