//! rvcluster: declarative k3s clusters on RISC-V boards over plain SSH.
//!
//! Data flows one way: `spec` (cluster.kdl) + `profile` (profiles/) are pure inputs;
//! `transport` and `registry` are the only modules that touch the world.

pub mod airgap;
pub mod artifact;
pub mod build;
pub mod command;
pub mod converge;
pub mod event;
pub mod generation;
pub mod images;
pub mod lock;
pub mod pki;
pub mod output;
pub mod profile;
pub mod registry;
pub mod render;
pub mod spec;
pub mod uninstall;
pub mod transport;
pub mod verify;
