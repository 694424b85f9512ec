//! keel's own diagnostics: `log` records to stderr, one line each, prefixed `keel: ` so they
//! can never be mistaken for the child's output (which keel never touches).
//!
//! Owns: the level (`KEEL_LOG` or `-v`) and the line format.
//! Must not: write to stdout, which belongs to the child.

use crate::cli::LogSetting;
use log::LevelFilter;
use std::io::Write;

/// Install the logger. Quiet by default: warnings and errors only.
pub fn init(setting: &LogSetting) {
    let mut b = env_logger::Builder::new();
    b.target(env_logger::Target::Stderr);
    b.format(|buf, record| {
        let level = match record.level() {
            log::Level::Error => "",
            log::Level::Warn => "warning: ",
            log::Level::Info => "info: ",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        writeln!(buf, "keel: {level}{}", record.args())
    });
    if setting.verbose > 0 {
        b.filter_level(match setting.verbose {
            1 => LevelFilter::Info,
            2 => LevelFilter::Debug,
            _ => LevelFilter::Trace,
        });
    } else if let Some(f) = &setting.filter {
        b.parse_filters(f);
    } else {
        b.filter_level(LevelFilter::Warn);
    }
    // Only fails if a logger is already installed, which keel never does twice.
    let _ = b.try_init();
}
