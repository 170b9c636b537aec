//! The `medianode` binary: the command line in [`medianode::cli`].

fn main() -> std::process::ExitCode {
    medianode::cli::main(std::env::args_os())
}
