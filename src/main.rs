//! The `kiln` binary: argument parsing and exit codes only (`cli/`); the work is in the
//! library, which the CLI reaches only through its public items.

mod cli;

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes
    // away (`kiln ir … | head`): Rust ignores SIGPIPE, which turns the next write into
    // a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal at startup, before any
    // other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::main());
}
