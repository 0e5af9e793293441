//! `conduit`: a small, fast Matrix homeserver. With no arguments it serves.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
