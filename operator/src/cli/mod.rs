//! Command-line entry points; `main.rs` only parses and dispatches.

pub mod operator;
