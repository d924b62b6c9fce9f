//! The `ringcast` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use ringcast::config::{self, Command};

fn main() -> ExitCode {
    let stdin_is_tty = ringcast::sys::isatty(0);
    let command = match config::parse_args(std::env::args_os().skip(1), stdin_is_tty) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringcast: {e}");
            eprintln!("Run `ringcast -help` for the list of flags.");
            return ExitCode::from(1);
        }
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Version(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig(_) => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Command::Run(config) => {
            ringcast::logger::init(config.log_level);
            match ringcast::server::run(config) {
                Ok(code) => ExitCode::from(code as u8),
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
