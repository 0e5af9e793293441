//! `conduit`: a small, fast Matrix homeserver. With no arguments it serves.

mod admin_socket;
mod backup;
mod cli;
mod init;

use std::process::ExitCode;

fn main() -> ExitCode {
    return_large_allocations();
    cli::run()
}

/// glibc keeps the memory of freed large allocations in per-thread arenas:
/// Argon2 takes 19 MiB per password hash on the blocking pool, and without
/// this every hashing thread kept that resident for good (RSS grew from
/// 18 MiB to 500 MiB after a few dozen registrations). Allocations of
/// 1 MiB and more are served by `mmap` and go back to the system when freed.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only tunes the allocator; it is called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
