//! The `fleetgate` command-line tool; all logic lives in `fleetgate-cli`.
fn main() -> std::process::ExitCode {
    fleetgate_cli::main()
}
