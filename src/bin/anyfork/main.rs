//! The anyfork command-line tool.
fn main() {}
