//! keyward's integration tests: each module runs the real binary (see
//! `util::Server`) and talks to it over HTTP. One test binary, so the
//! harness is compiled and linked once.

mod alerts;
mod analytics;
mod api;
mod authz;
mod cli;
mod cluster;
mod crash;
mod dashboard;
mod events;
mod gateway;
mod incidents;
mod lifecycle;
mod policy;
mod readme;
mod regression;
mod schemathesis;
mod security;
mod traffic;
mod util;
