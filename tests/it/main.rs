//! One integration-test binary: every test drives the real `etcd-ca` binary, and the cluster
//! tests run real etcd members on 127.0.0.11-13 with certificates it issued.
//!
//! Ports used by etcd clusters (one pair per test, so tests run in parallel):
//!
//! | test                | client port | peer port |
//! |---------------------|-------------|-----------|
//! | foundation_cluster  | 22379       | 22380     |
//! | api_cluster         | 22479       | 22480     |
//! | agent_cluster       | 22579       | 22580     | (CA server on 22581)
//! | rotation (1st run)  | 22679       | 22680     | (CA server on 22681)
//! | rotation (2nd run)  | 22879       | 22880     | (CA server on 22881)
//! | crash               | -           | -         | (CA server on 22781)
//! | etcd_config_file    | 22979       | 22980     | (member on 127.0.0.14)
//! | readme (walkthrough)| 2379        | 2380      | (etcd's usual ports, as the README says)
//! | probe               | 23079       | 23080     | (one member on 127.0.0.41)
//! | web_view            | -           | -         | (chromedriver on 23190)
//!
//! PostgreSQL servers (tests/it/replicas.rs has its table): 22901-22909; their CA servers
//! 22911-22999. The store's unit tests use PostgreSQL on 55431.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_cli;
mod adopt;
mod agent_cluster;
mod agent_fail_fast;
mod agent_faults;
mod agent_repair;
mod agent_unit;
mod alerts;
mod api_attempt_limits;
mod api_cluster;
mod api_limits;
mod api_refusals;
mod api_renewal;
mod api_slots;
mod backup;
mod ca_init;
mod cli_errors;
mod crash;
mod crl_generations;
mod csr;
mod curl_walkthrough;
mod disk_full;
mod etcd_config_file;
mod failover;
mod first_hour;
mod fleet;
mod foundation_cluster;
mod hardening;
mod helpers;
mod hostile;
mod import;
mod key_at_rest;
mod postgres_server;
mod probe;
mod readme;
mod replicas;
mod replicas_rotation;
mod retention;
mod rotation;
mod rotation_races;
mod rotation_steps;
mod secrets_in_logs;
mod web_view;
