//! The `cutover` binary: installs the crypto provider, parses the command line and maps results
//! to exit codes. All protocol logic lives in the library.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // One crypto backend (aws-lc-rs); install it before anything builds a rustls config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cutover: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
