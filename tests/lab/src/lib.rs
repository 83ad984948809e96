//! The emulated board lab (test facility, not shipped): openEuler riscv64 boards made of a real
//! sshd in private namespaces, systemctl/journalctl emulation, an upstream registry playing
//! docker.io, and a registry host board. See README.md for the API.

pub mod addr;
pub mod artifacts;
pub mod board;
pub mod clusterfile;
pub mod error;
pub mod flavour;
pub mod lab;
pub mod ns;
pub mod registry;
pub mod systemd;

pub use artifacts::{k3s_sim_binary, rvcluster_binary};
pub use board::{Board, K3S_PATHS, K3sLeftovers, Role};
pub use error::{LabError, Result};
pub use flavour::Flavour;
pub use lab::{Lab, LabBuilder, SeededImage};
pub use registry::Upstream;
pub use systemd::{ServiceStart, StartKind};
