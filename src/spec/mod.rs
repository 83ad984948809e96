//! The cluster description: cluster.kdl decoded into a typed `Cluster`, validated before any host
//! is contacted, with spans kept for error messages. Pure: reads the file and the files it names,
//! never a host or the network.

pub mod build;
pub mod diag;
pub mod filter;
pub mod kdl;
pub mod load;
pub mod model;
pub mod reference;
pub mod values;

pub use diag::SpecError;
pub use load::{load, parse};
pub use model::*;
