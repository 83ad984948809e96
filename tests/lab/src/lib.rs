//! The emulated board lab (test facility, not shipped).
