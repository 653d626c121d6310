//! `breakwater`: the operator command line.

fn main() {}
