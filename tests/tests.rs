//! Breakwater's end-to-end tests: real nodes and the real `breakwater` binary, driven as a user would.
