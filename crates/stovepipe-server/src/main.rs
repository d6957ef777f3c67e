//! The `stovepipe` binary.

fn main() {}
