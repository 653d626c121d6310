//! The Breakwater node as a library: the libp2p mesh ([`net`]), the sled
//! store ([`store`]), the store worker that validates, seals and opens, one
//! event loop that owns the swarm, the local HTTP API ([`api`]) and the
//! data-directory layout ([`config`]).
//!
//! Architecture invariant: the event loop never touches sled. Every store
//! operation runs on the worker thread; the event loop only moves bytes
//! between the swarm and the worker.

#![deny(missing_docs)]

pub mod api;
pub mod config;
mod event_loop;
pub mod export;
pub mod fork;
pub mod handle;
mod job;
pub mod metrics;
pub mod net;
pub mod node;
pub mod store;
pub mod taxii;
pub mod ui;
pub mod webhook;
mod worker;

pub use config::{Config, ConfigError, DataDir};
pub use handle::{
    Detail, Equivocated, ListFilter, NodeEvent, NodeHandle, PeerInfo, PublishRequest, Published,
    RequestError, RosterFork, Status, Summary, Traffic,
};
pub use net::TransportKind;
pub use node::{Node, SpawnError, spawn};
