//! The `kiln` binary: argument parsing and exit codes only; the work is in the library.

fn main() {
    std::process::exit(kiln::cli::main());
}
