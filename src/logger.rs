//! keel's own diagnostics: `log` records to stderr, one line each, prefixed `keel: ` so they
//! can never be mistaken for the child's output (which keel never touches).
//!
//! Owns: the level (`KEEL_LOG` or `-v`) and the line format.
//! Must not: write to stdout, which belongs to the child.

use crate::frontend::LogSetting;
use crate::plan::Dialect;
use log::Level;
use std::io::Write;

/// Install the logger, with line prefixes in `dialect`'s style (`keel: `, `[WARN  tini (7)] `,
/// `[dumb-init] `, `ERROR (catatonit:7): `) so scripts that grep a peer's messages still work.
pub fn init(setting: &LogSetting, dialect: Dialect) {
    let mut b = env_logger::Builder::new();
    b.target(env_logger::Target::Stderr);
    b.format(move |buf, record| {
        let l = record.level();
        match dialect {
            Dialect::Keel => {
                let level = match l {
                    Level::Error => "",
                    Level::Warn => "warning: ",
                    Level::Info => "info: ",
                    Level::Debug => "debug: ",
                    Level::Trace => "trace: ",
                };
                writeln!(buf, "keel: {level}{}", record.args())
            }
            Dialect::Tini => {
                let level = if l == Level::Error {
                    "FATAL"
                } else {
                    l.as_str()
                };
                writeln!(
                    buf,
                    "[{level:<5} tini ({})] {}",
                    std::process::id(),
                    record.args()
                )
            }
            Dialect::DumbInit => writeln!(buf, "[dumb-init] {}", record.args()),
            Dialect::Catatonit => writeln!(
                buf,
                "{} (catatonit:{}): {}",
                l.as_str(),
                std::process::id(),
                record.args()
            ),
        }
    });
    match &setting.filter {
        Some(f) => {
            b.parse_filters(f);
        }
        None => {
            b.filter_level(setting.level);
        }
    }
    // Only fails if a logger is already installed, which keel never does twice.
    let _ = b.try_init();
}
