//! The Breakwater simulator: placeholder until scenarios land.

fn main() {}
