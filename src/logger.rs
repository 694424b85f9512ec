//! keel's own diagnostics: `log` records to stderr, one line each, prefixed so they can never
//! be mistaken for the child's output (which keel never touches).
//!
//! Owns: the level and the line format (keel's, or the personality's, so scripts that grep a
//! peer's messages still work). A line is formatted into one buffer and written with one
//! `write(2)`, so keel's lines never interleave mid-line with a child's output on the same fd.
//! Must not: write to stdout, which belongs to the child.
//!
//! Never blocks: lines go out through a private non-blocking description of stderr
//! ([`crate::logs::Writer`]), opened at the first line. When stderr has no room (its reader
//! is slow or gone), the line is dropped and counted, and the next line that fits is preceded
//! by how many were lost: PID 1 must not stall on its own diagnostics (services' output, by
//! contrast, is never dropped: it gets backpressure, see `logs`).
//!
//! A small `log::Log` of keel's own rather than env_logger: keel logs from one module at a
//! handful of levels; env_logger's filter and formatting machinery cost ~20 KB of the static
//! binary and ~100 KiB of resident memory (measured with VmHWM) for nothing keel uses.

use crate::logs::Writer;
use crate::plan::Dialect;
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Logger {
    level: LevelFilter,
    dialect: Dialect,
    out: OnceLock<Writer>,
    dropped: AtomicU64,
}

impl Logger {
    fn emit(&self, line: &[u8]) {
        let out = self.out.get_or_init(|| Writer::open(2));
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("keel: warning: {dropped} log line(s) dropped: stderr was full\n");
            match out.try_write(note.as_bytes()) {
                Ok(_) => self.dropped.store(0, Ordering::Relaxed),
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        // A pipe takes a line of up to PIPE_BUF bytes whole or not at all; a longer one may
        // go out in part, and the rest is written while there is room.
        let mut rest = line;
        while !rest.is_empty() {
            match out.try_write(rest) {
                Ok(n) => rest = &rest[n.min(rest.len())..],
                Err(_) => {
                    if rest.len() == line.len() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let l = record.level();
        let args = record.args();
        let line = match self.dialect {
            Dialect::Keel => {
                let level = match l {
                    Level::Error => "",
                    Level::Warn => "warning: ",
                    Level::Info => "info: ",
                    Level::Debug => "debug: ",
                    Level::Trace => "trace: ",
                };
                format!("keel: {level}{args}\n")
            }
            Dialect::Tini => {
                let level = if l == Level::Error {
                    "FATAL"
                } else {
                    l.as_str()
                };
                format!("[{level:<5} tini ({})] {args}\n", std::process::id())
            }
            Dialect::DumbInit => format!("[dumb-init] {args}\n"),
            Dialect::Catatonit => {
                format!(
                    "{} (catatonit:{}): {args}\n",
                    l.as_str(),
                    std::process::id()
                )
            }
        };
        self.emit(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parse a `KEEL_LOG` value: `error`, `warn`, `info`, `debug`, `trace` or `off` (also in the
/// env_logger form `keel=debug`).
pub fn parse_level(text: &str) -> Result<LevelFilter, String> {
    let t = text.trim();
    let t = t.strip_prefix("keel=").unwrap_or(t);
    t.parse::<LevelFilter>().map_err(|_| {
        format!("'{text}' is not a log level (use error, warn, info, debug, trace or off)")
    })
}

/// Install the logger at `level`, with line prefixes in `dialect`'s style (`keel: `,
/// `[WARN  tini (7)] `, `[dumb-init] `, `ERROR (catatonit:7): `).
pub fn init(level: LevelFilter, dialect: Dialect) {
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        level,
        dialect,
        out: OnceLock::new(),
        dropped: AtomicU64::new(0),
    }));
    // Fails only if a logger is already installed, which keel never does twice.
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("TRACE"), Ok(LevelFilter::Trace));
        assert_eq!(parse_level("keel=info"), Ok(LevelFilter::Info));
        assert_eq!(parse_level("off"), Ok(LevelFilter::Off));
        assert!(parse_level("loud").is_err());
    }
}
