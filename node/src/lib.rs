//! The Breakwater node: placeholder until the daemon lands.
#![deny(missing_docs)]

pub mod net;
pub mod store;
