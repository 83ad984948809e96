//! registry: everything rvcluster says to an OCI/Distribution registry.
//!
//! Owns: reading image sources (oci-archive, oci dir, docker-archive, docker://) down to their
//! linux/riscv64 manifest ([`source`]), the blocking HTTP client with auth/TLS and resumable
//! chunked uploads ([`client`]), push plans and pushes with progress events ([`push`]), where
//! containerd will look for an image given the mirrors ([`resolve`], pure) and the closure check
//! ([`closure`]).
//!
//! Must not touch: hosts or SSH (deploying the registry is the executor's job), cluster.kdl
//! parsing (callers convert `spec` types into [`resolve::MirrorConfig`] / [`source::Source`]),
//! the lock file format (callers record the digests found in [`push::PushReport`]).

pub mod client;
pub mod closure;
pub mod digest;
mod error;
pub mod oci;
pub mod push;
pub mod resolve;
pub mod source;

pub use client::{ClientOptions, Credentials, RegistryClient};
pub use closure::{ClosureReport, FixDelivery, Need, NeededBy, Status};
pub use error::RegistryError;
pub use push::{PushEvent, PushItem, PushPlan, PushReport};
pub use resolve::{Attempt, MirrorConfig, MirrorEntry, Rewrite, attempts};
pub use source::{LoadedImage, RemoteSources, Source, load};
