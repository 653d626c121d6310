//! Breakwater's end-to-end tests: real nodes and the real `breakwater` binary, driven as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

mod api;
mod bad_input;
mod doctor;
mod hardening;
mod interop;
mod lifecycle;
mod local;
mod operators;
mod service;
mod ui;
mod walkthrough;
