//! k3s-sim: a stand-in for the k3s binary in the emulated board lab, plus deterministic upstream
//! image seeding. It behaves as k3s documents (docs/k3s-behaviour.md), not as rvcluster
//! expects. Test facility only; never shipped.
pub mod agent;
pub mod airgap;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod image;
pub mod kubectl;
pub mod kubelet;
pub mod leftovers;
pub mod manifests;
pub mod paths;
pub mod pull;
pub mod registries;
pub mod release;
pub mod server;
pub mod simconf;
pub mod upstream;
pub mod util;

/// The k3s version this build reports unless overridden (see `release::effective_version`).
pub const DEFAULT_VERSION: &str = "v1.33.4+k3s1";
