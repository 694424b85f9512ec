//! Service output relay (multi-service mode, `output = "prefix"`): every line a service writes
//! to its stdout or stderr goes to keel's own stdout or stderr as `NAME | line`.
//!
//! Owns: the read ends of the services' output pipes, one bounded line buffer per pipe (a
//! *relay*), one bounded queue per keel output (a *sink*: fd 1 or fd 2, opened so that keel's
//! writes never block), and a bounded ring of each service's recent lines (for `ctl logs`).
//! Must not: block keel's loop (every fd it reads or writes is non-blocking, and it sleeps only
//! in the runtime's `epoll_wait`, or in [`Logs::flush_all`]'s `poll` at exit); lose or reorder
//! a service's line; grow without bound; or set `O_NONBLOCK` on keel's fds 1 and 2 (the flag
//! lives on the open file description, which children that inherit keel's stdout share: they
//! would get `EAGAIN` on their own writes).
//!
//! Output format. A line of a service named `web` becomes `web | text\n`; names are padded to
//! the longest service name (like docker compose), so the bars line up. A line too long for one
//! record (see [`RECORD_MAX`]), or a partial line written out before its end arrived (a prompt,
//! after [`PARTIAL_DELAY`]), goes out in several records: the first with `|`, each continuation
//! with `+` (`web + more text\n`). Every record ends with a newline. Concatenating a line's
//! records' texts gives the line back; a split never cuts a UTF-8 character in two.
//!
//! Backpressure, not loss. When a sink's queue is full (its reader is slow), the relays that
//! have lines for it stop being read (their fds leave the epoll set: an empty event mask would
//! still report `EPOLLHUP` when the service exits, and wake keel in a loop), so their pipes
//! fill and the *services* block in `write`, not keel. When the sink drains (`EPOLLOUT`), the
//! waiting relays are let in oldest first and read again. A relay is read at most one buffer
//! per wake-up, so a flooding service cannot starve a quiet one. Memory is bounded by
//! [`RELAY_BUF`] per relay, [`QUEUE_MAX`] per sink and [`RING_BYTES`] per service.
//!
//! An output that fails (`EPIPE`, `ENOSPC`, ...) is reported once and discards from then on:
//! holding lines for an output that is gone would stall every service behind it.
//!
//! Atomicity. Each write to a sink is a batch of whole records of at most `PIPE_BUF` bytes, so
//! on a pipe it is all-or-nothing and can never interleave mid-line with keel's own log lines
//! (one `write` of one whole line each, from `logger.rs`) or with another writer. A tty or a
//! socket may take part of a batch; the rest follows in the next write.

use crate::sys::{self, Epoll, SysError};
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The epoll tokens of this module: `TOKEN_RANGE | low 32 bits`. The runtime routes every token
/// for which [`owns`] is true to [`Logs::on_event`].
pub const TOKEN_RANGE: u64 = 2 << 32;
const TOKEN_HIGH: u64 = !0xffff_ffff;
const TOKEN_SINK_OUT: u64 = TOKEN_RANGE;
const TOKEN_SINK_ERR: u64 = TOKEN_RANGE | 1;
/// Relays are `TOKEN_RELAY | id`, ids below 2^31.
const TOKEN_RELAY: u64 = TOKEN_RANGE | (1 << 31);
const ID_MASK: u32 = 0x7fff_ffff;

/// Whether `token` is one of this module's epoll tokens.
pub fn owns(token: u64) -> bool {
    token & TOKEN_HIGH == TOKEN_RANGE
}

/// Longest record (prefix, text and newline), and so longest single write of a batch:
/// `PIPE_BUF`, the size up to which the kernel writes to a pipe atomically.
pub const RECORD_MAX: usize = 4096;
/// Each relay's line buffer. A read takes at most this much from one service per wake-up.
pub const RELAY_BUF: usize = 16 * 1024;
/// Each sink's queue of formatted records waiting for keel's stdout or stderr to take them.
pub const QUEUE_MAX: usize = 64 * 1024;
/// How long a partial line (no newline yet, e.g. a prompt) may wait for its end before it is
/// written out as it is.
pub const PARTIAL_DELAY: Duration = Duration::from_millis(100);
/// The ring of recent lines keeps at most this many records per service...
pub const RING_LINES: usize = 256;
/// ...and at most this many bytes of text per service, whichever limit is hit first.
pub const RING_BYTES: usize = 64 * 1024;
/// Longer service names are cut (at a character boundary) in the prefix, so a prefix always
/// leaves most of a record for the text.
const NAME_SHOWN_MAX: usize = 64;
/// For a sink that said `EAGAIN` but cannot be watched with epoll: try again this much later.
const SINK_RETRY: Duration = Duration::from_millis(100);

/// Which output stream of a service a relay carries, and so which of keel's it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The service's stdout, relayed to keel's fd 1.
    Stdout,
    /// The service's stderr, relayed to keel's fd 2.
    Stderr,
}

/// One relay: a service's stdout or stderr pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(u32);

/// How keel writes to one of its own outputs without ever blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// A pipe, FIFO or tty, re-opened through `/proc/self/fd/N` with `O_NONBLOCK`: a private
    /// open file description, so fd N itself (shared with children) stays blocking.
    Reopened,
    /// A socket (e.g. journald's stdout stream): `send(MSG_DONTWAIT | MSG_NOSIGNAL)`, which is
    /// non-blocking per call.
    Socket,
    /// A regular file (a duplicate of fd N, sharing its offset and `O_APPEND`): writes never
    /// wait for a reader. Re-opening would start a new offset at 0 and overwrite the file.
    Plain,
    /// A pipe or tty that could not be re-opened (no `/proc`): `poll` for room before each
    /// write. Only a writer sharing the pipe that fills it between the two calls could make
    /// that write wait.
    Polled,
    /// fd N is closed, or keel's writes to it failed: output is dropped.
    Discard,
}

/// A record from a service's recent output ([`Logs::recent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentLine {
    /// Which stream it came from.
    pub stream: Stream,
    /// True if it continues the previous record's line (it was written with `+`).
    pub continued: bool,
    /// The text, without prefix or newline.
    pub text: Vec<u8>,
}

/// The service output relay. See the module documentation.
pub struct Logs {
    relays: Vec<Relay>,
    /// The prefix width from [`Logs::set_names`].
    min_width: usize,
    out: Sink,
    err: Sink,
    rings: Vec<Ring>,
    next_id: u32,
}

struct Relay {
    id: u32,
    name: String,
    stream: Stream,
    fd: OwnedFd,
    /// `buf[..len]`: bytes read and not yet queued. Unless `blocked`, only a partial line.
    buf: Box<[u8]>,
    len: usize,
    /// Prefixes for a line's first record and for its continuations.
    first: Vec<u8>,
    cont: Vec<u8>,
    /// The last record queued did not end its line.
    mid_line: bool,
    /// When the partial line in `buf` started waiting for its end.
    partial_since: Option<Instant>,
    /// Waiting in its sink's queue for room; not watched meanwhile.
    blocked: bool,
    /// Registered with epoll (for input). Unwatching removes the fd from epoll rather than
    /// clearing its events, because epoll reports `EPOLLHUP` (every writer gone) whatever the
    /// events asked for, and a silenced relay would wake keel in a loop.
    watched: bool,
    /// End of file (or a read error): never read again.
    eof: bool,
    /// Removed: close once everything is out of the pipe and the buffer.
    closing: bool,
}

impl Relay {
    /// The unused part of the line buffer, allocated at the first output: a service that
    /// never prints costs no buffer (measured: 13 KiB per service with 200 services).
    fn free(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; RELAY_BUF].into_boxed_slice();
        }
        self.buf.get_mut(self.len..).unwrap_or_default()
    }
}

impl Relay {
    fn token(&self) -> u64 {
        TOKEN_RELAY | u64::from(self.id)
    }

    fn watch(&mut self, epoll: &Epoll, on: bool) -> Result<(), SysError> {
        if on == self.watched {
            return Ok(());
        }
        self.watched = on;
        if on {
            let r = epoll.add(self.fd.as_raw_fd(), self.token());
            self.watched = r.is_ok();
            r
        } else {
            epoll.remove(self.fd.as_raw_fd())
        }
    }
}

/// Formatted records waiting for a sink: `bytes[head..]`, never more than [`QUEUE_MAX`].
struct Queue {
    bytes: Vec<u8>,
    head: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.bytes.len().saturating_sub(self.head)
    }

    fn room(&self) -> usize {
        QUEUE_MAX.saturating_sub(self.len())
    }

    /// Append one record; the caller checked `room()`.
    fn push(&mut self, parts: [&[u8]; 3]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if self.bytes.len() + total > QUEUE_MAX {
            // Move the unwritten bytes to the front rather than grow: the Vec never exceeds
            // QUEUE_MAX.
            self.bytes.drain(..self.head.min(self.bytes.len()));
            self.head = 0;
        }
        for p in parts {
            self.bytes.extend_from_slice(p);
        }
    }

    /// The next write: whole records, at most `RECORD_MAX` bytes.
    fn batch(&self) -> &[u8] {
        let pending = self.bytes.get(self.head..).unwrap_or(&[]);
        match pending.get(..RECORD_MAX) {
            Some(window) if pending.len() > RECORD_MAX => {
                match window.iter().rposition(|&b| b == b'\n') {
                    Some(i) => window.get(..=i).unwrap_or(window),
                    // Cannot happen (every record ends with a newline and fits), but a batch
                    // must still move on.
                    None => window,
                }
            }
            _ => pending,
        }
    }

    fn consume(&mut self, n: usize) {
        self.head = self.head.saturating_add(n);
        if self.head >= self.bytes.len() {
            self.bytes.clear();
            self.head = 0;
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.head = 0;
    }
}

enum SinkKind {
    Reopened(OwnedFd),
    Socket(OwnedFd),
    Plain(OwnedFd),
    Polled(OwnedFd),
    Discard,
}

impl SinkKind {
    /// One write without blocking: bytes taken, or the errno (`EAGAIN` for no room).
    fn write_once(&self, buf: &[u8]) -> Result<usize, i32> {
        loop {
            // SAFETY (all arms): buf is valid for buf.len() bytes; the fds are open and ours.
            let n = match self {
                SinkKind::Reopened(fd) | SinkKind::Plain(fd) => unsafe {
                    libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len())
                },
                // MSG_NOSIGNAL: a peer that went away is an error to report, not a SIGPIPE.
                SinkKind::Socket(fd) => unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                },
                SinkKind::Polled(fd) => {
                    if !poll_writable(fd.as_raw_fd()) {
                        return Err(libc::EAGAIN);
                    }
                    unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }
                }
                SinkKind::Discard => return Ok(buf.len()),
            };
            if n > 0 {
                return Ok(n as usize);
            }
            if n == 0 {
                // Nothing taken from a non-empty batch: treat as "no room", never as progress.
                return if buf.is_empty() {
                    Ok(0)
                } else {
                    Err(libc::EAGAIN)
                };
            }
            match sys::errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
    }
}

/// A non-blocking writer on one of keel's own fds, for keel's own diagnostics (the logger):
/// the same private-description rules as the relay's sinks, without a queue.
pub struct Writer(SinkKind);

impl Writer {
    /// A writer on `fd` (fd 2 for the logger).
    pub fn open(fd: RawFd) -> Writer {
        Writer(open_sink(fd))
    }

    /// One write without blocking: bytes taken, or the errno (`EAGAIN`: no room now).
    pub fn try_write(&self, buf: &[u8]) -> Result<usize, i32> {
        self.0.write_once(buf)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The queue is empty.
    Empty,
    /// The sink said `EAGAIN` with records still queued.
    Blocked,
}

struct Sink {
    kind: SinkKind,
    token: u64,
    /// The operation named in a write error.
    op: &'static str,
    queue: Queue,
    /// Blocked relays, in the order they ran out of room.
    waiters: VecDeque<u32>,
    /// Registered with epoll for `EPOLLOUT` (only while records wait for room).
    armed: bool,
    /// For a blocked sink epoll cannot watch: when to try again.
    retry_at: Option<Instant>,
}

impl Sink {
    fn open(fd: RawFd, token: u64, op: &'static str) -> Sink {
        Sink {
            kind: open_sink(fd),
            token,
            op,
            queue: Queue {
                bytes: Vec::new(),
                head: 0,
            },
            waiters: VecDeque::new(),
            armed: false,
            retry_at: None,
        }
    }

    fn mode(&self) -> SinkMode {
        match self.kind {
            SinkKind::Reopened(_) => SinkMode::Reopened,
            SinkKind::Socket(_) => SinkMode::Socket,
            SinkKind::Plain(_) => SinkMode::Plain,
            SinkKind::Polled(_) => SinkMode::Polled,
            SinkKind::Discard => SinkMode::Discard,
        }
    }

    fn fd(&self) -> Option<RawFd> {
        match &self.kind {
            SinkKind::Reopened(fd)
            | SinkKind::Socket(fd)
            | SinkKind::Plain(fd)
            | SinkKind::Polled(fd) => Some(fd.as_raw_fd()),
            SinkKind::Discard => None,
        }
    }

    /// One write without blocking: bytes taken, or the errno (`EAGAIN` for no room).
    fn write_once(&self, buf: &[u8]) -> Result<usize, i32> {
        self.kind.write_once(buf)
    }

    /// Write batches until the queue is empty or the sink has no room. On a write error other
    /// than `EAGAIN` the caller must [`Sink::break_off`].
    fn write_out(&mut self) -> Result<Flow, SysError> {
        loop {
            let batch = self.queue.batch();
            if batch.is_empty() {
                return Ok(Flow::Empty);
            }
            match self.write_once(batch) {
                Ok(n) => self.queue.consume(n),
                Err(libc::EAGAIN) => return Ok(Flow::Blocked),
                Err(errno) => return Err(SysError { op: self.op, errno }),
            }
        }
    }

    /// Stop writing to an output that failed: discard from then on (keeping the lines would
    /// stall every service behind an output that is gone).
    fn break_off(&mut self, epoll: Option<&Epoll>) -> Result<(), SysError> {
        let unwatched = match epoll {
            Some(epoll) => self.watch(epoll, false, Instant::now()),
            None => Ok(()),
        };
        self.kind = SinkKind::Discard;
        self.queue.clear();
        unwatched
    }

    /// Watch for room (`EPOLLOUT`) while records are queued, and only then: a writable pipe
    /// is level-triggered ready almost always, and would wake keel in a loop. Unwatching
    /// removes the fd from epoll rather than clearing its events, because epoll reports
    /// `EPOLLERR` (a reader that went away) whatever the events asked for.
    fn watch(&mut self, epoll: &Epoll, want: bool, now: Instant) -> Result<(), SysError> {
        if !want {
            self.retry_at = None;
        }
        if want == self.armed {
            return Ok(());
        }
        let Some(fd) = self.fd() else {
            return Ok(());
        };
        if !want {
            self.armed = false;
            return epoll.remove(fd);
        }
        match epoll.add_events(fd, self.token, libc::EPOLLOUT as u32) {
            Ok(()) => {
                self.armed = true;
                Ok(())
            }
            Err(e) => {
                // A file epoll cannot watch (EPERM): try again on a timer.
                self.retry_at = Some(now + SINK_RETRY);
                if e.errno == libc::EPERM {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// A service's recent records: at most [`RING_LINES`] and [`RING_BYTES`] of text.
struct Ring {
    name: String,
    bytes: VecDeque<u8>,
    lines: VecDeque<(Stream, bool, usize)>,
    /// Records ever pushed: the sequence number of the newest (for `keel ctl logs -f`).
    pushed: u64,
}

impl Ring {
    fn push(&mut self, stream: Stream, continued: bool, text: &[u8]) {
        self.pushed += 1;
        self.bytes.extend(text);
        self.lines.push_back((stream, continued, text.len()));
        while self.lines.len() > RING_LINES || self.bytes.len() > RING_BYTES {
            let Some((_, _, len)) = self.lines.pop_front() else {
                break;
            };
            self.bytes.drain(..len.min(self.bytes.len()));
        }
    }

    fn recent(&self, n: usize) -> Vec<RecentLine> {
        let skip = self.lines.len().saturating_sub(n);
        let mut offset: usize = self.lines.iter().take(skip).map(|l| l.2).sum();
        let mut lines = Vec::with_capacity(self.lines.len() - skip);
        for &(stream, continued, len) in self.lines.iter().skip(skip) {
            // Clamped, though the lengths always add up to the bytes held.
            let end = (offset + len).min(self.bytes.len());
            let text = self.bytes.range(offset.min(end)..end).copied().collect();
            offset = end;
            lines.push(RecentLine {
                stream,
                continued,
                text,
            });
        }
        lines
    }
}

/// Where a UTF-8 text may be cut at or just before `max` without splitting a character (a
/// cut before a continuation byte `10xxxxxx` would). Not valid UTF-8: `max`.
fn char_cut(data: &[u8], max: usize) -> usize {
    for back in 0..4 {
        let cut = max.saturating_sub(back);
        if cut == 0 {
            break;
        }
        match data.get(cut) {
            Some(b) if b & 0xc0 == 0x80 => continue,
            _ => return cut,
        }
    }
    max
}

/// Move `relay`'s buffered lines into `queue` as records, in order, while they fit. A partial
/// line waits unless `force` (or it is too long for one record). `may` false: the queue is
/// reserved for relays already waiting, so this one must not take room. Returns false if
/// records are left that did not fit.
fn pump(
    relay: &mut Relay,
    queue: &mut Queue,
    mut ring: Option<&mut Ring>,
    may: bool,
    force: bool,
    now: Instant,
) -> bool {
    let mut start = 0;
    let mut all = true;
    loop {
        let data = relay.buf.get(start..relay.len).unwrap_or(&[]);
        if data.is_empty() {
            break;
        }
        let prefix = if relay.mid_line {
            &relay.cont
        } else {
            &relay.first
        };
        // Prefixes are short (names are cut), so this never goes below 3 KiB.
        let chunk_max = RECORD_MAX.saturating_sub(prefix.len() + 1).max(1);
        let look = data.get(..chunk_max + 1).unwrap_or(data);
        let (text_len, used, ends_line) = match look.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None if data.len() > chunk_max => {
                let cut = char_cut(data, chunk_max);
                (cut, cut, false)
            }
            None if force => (data.len(), data.len(), false),
            None => break,
        };
        if relay.mid_line && ends_line && text_len == 0 {
            // The end of a line whose text already went out: its records end with newlines.
            start += used;
            relay.mid_line = false;
            continue;
        }
        if !may || queue.room() < prefix.len() + text_len + 1 {
            all = false;
            break;
        }
        let text = data.get(..text_len).unwrap_or(data);
        queue.push([prefix, text, b"\n"]);
        if let Some(ring) = ring.as_deref_mut() {
            ring.push(relay.stream, relay.mid_line, text);
        }
        relay.mid_line = !ends_line;
        start += used;
    }
    if start > 0 && start <= relay.len && relay.len <= relay.buf.len() {
        relay.buf.copy_within(start..relay.len, 0);
        relay.len -= start;
    }
    // The clock runs for the partial line now at the front of the buffer: a new one if
    // anything was queued (the old one was at the front, so it went out).
    if relay.len == 0 {
        relay.partial_since = None;
    } else if start > 0 || relay.partial_since.is_none() {
        relay.partial_since = Some(now);
    }
    all
}

impl Logs {
    /// A relay writing to keel's own stdout (fd 1) and stderr (fd 2).
    pub fn stdio() -> Logs {
        Logs::with_sinks(libc::STDOUT_FILENO, libc::STDERR_FILENO)
    }

    /// A relay writing service stdout to `out` and service stderr to `err` (tests use pipes).
    /// Neither fd is changed or taken over: keel writes through its own descriptions of them
    /// (see [`SinkMode`]). A closed fd (or `-1`) discards.
    pub fn with_sinks(out: RawFd, err: RawFd) -> Logs {
        Logs {
            relays: Vec::new(),
            min_width: 0,
            out: Sink::open(out, TOKEN_SINK_OUT, "write service output to stdout"),
            err: Sink::open(err, TOKEN_SINK_ERR, "write service output to stderr"),
            rings: Vec::new(),
            next_id: 0,
        }
    }

    /// How keel writes to the sink for `stream` (for a diagnostic at start-up, and tests).
    pub fn sink_mode(&self, stream: Stream) -> SinkMode {
        self.sink(stream).mode()
    }

    /// Bytes queued for the sink of `stream`; never more than [`QUEUE_MAX`].
    pub fn queued(&self, stream: Stream) -> usize {
        self.sink(stream).queue.len()
    }

    /// Create the pipe for service `name`'s `stream` and start relaying it. Returns the
    /// relay's id and the pipe's write end for the child (blocking, `O_CLOEXEC`; the runtime
    /// `dup2`s it onto fd 1 or 2 of each instance). The pipe is meant to live across restarts:
    /// if the runtime keeps the write end, there is no end of file between instances, and
    /// lines from an old straggler and a new instance interleave only at line boundaries.
    pub fn add(
        &mut self,
        epoll: &Epoll,
        name: &str,
        stream: Stream,
    ) -> Result<(RelayId, OwnedFd), SysError> {
        let (read, write) = pipe_for_child()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1) & ID_MASK;
        let mut relay = Relay {
            id,
            name: name.to_string(),
            stream,
            fd: read,
            // Allocated at the first output (see Relay::free).
            buf: Box::default(),
            len: 0,
            first: Vec::new(),
            cont: Vec::new(),
            mid_line: false,
            partial_since: None,
            blocked: false,
            watched: false,
            eof: false,
            closing: false,
        };
        relay.watch(epoll, true)?;
        if !self.rings.iter().any(|r| r.name == name) {
            self.rings.push(Ring {
                name: name.to_string(),
                bytes: VecDeque::new(),
                lines: VecDeque::new(),
                pushed: 0,
            });
        }
        self.relays.push(relay);
        self.relabel();
        Ok((RelayId(id), write))
    }

    /// Stop relaying `id` (its service was removed): everything still in the pipe and the
    /// buffer goes out first, then keel's read end is closed. The runtime should drop its
    /// write end too; until every writer is gone or has stopped writing, the relay keeps
    /// draining (with backpressure) and closes when its pipe is empty.
    pub fn remove(&mut self, epoll: &Epoll, id: RelayId, now: Instant) -> Result<(), SysError> {
        if let Some(r) = self.relays.iter_mut().find(|r| r.id == id.0) {
            r.closing = true;
        }
        self.settle(epoll, now)
    }

    /// Handle epoll readiness for one of this module's tokens ([`owns`]). Unknown tokens (a
    /// relay removed earlier in the same batch of events) are ignored. An error (a sink that
    /// failed and now discards, an epoll call that failed) is for the runtime to log; the relay
    /// goes on.
    pub fn on_event(&mut self, epoll: &Epoll, token: u64, now: Instant) -> Result<(), SysError> {
        let mut errors = Errors::default();
        match token {
            TOKEN_SINK_OUT => errors.note(self.drain(epoll, Stream::Stdout, now)),
            TOKEN_SINK_ERR => errors.note(self.drain(epoll, Stream::Stderr, now)),
            t if t & TOKEN_RELAY == TOKEN_RELAY => {
                if let Some(i) = self.index((t & u64::from(ID_MASK)) as u32) {
                    errors.note(self.read_relay(epoll, i, now));
                    if let Some(stream) = self.relays.get(i).map(|r| r.stream) {
                        errors.note(self.drain(epoll, stream, now));
                    }
                }
            }
            _ => {}
        }
        errors.note(self.settle(epoll, now));
        errors.into_result()
    }

    /// The next time [`Logs::on_timer`] has something to do: a partial line due to be written
    /// out, or a sink epoll cannot watch to retry. A relay waiting for its sink has no
    /// deadline (the sink's readiness resumes it), so a backed-up keel does not spin.
    pub fn next_deadline(&self) -> Option<Instant> {
        let partial = self
            .relays
            .iter()
            .filter(|r| !r.blocked)
            .filter_map(|r| r.partial_since)
            .map(|t| t + PARTIAL_DELAY);
        let retry = [self.out.retry_at, self.err.retry_at].into_iter().flatten();
        partial.chain(retry).min()
    }

    /// Write out partial lines that waited [`PARTIAL_DELAY`], and retry unwatchable sinks.
    pub fn on_timer(&mut self, epoll: &Epoll, now: Instant) -> Result<(), SysError> {
        let mut errors = Errors::default();
        for i in 0..self.relays.len() {
            let due = self.relays.get(i).is_some_and(|r| {
                !r.blocked && r.partial_since.is_some_and(|t| t + PARTIAL_DELAY <= now)
            });
            if due {
                errors.note(self.feed(epoll, i, true, now));
            }
        }
        errors.note(self.drain(epoll, Stream::Stdout, now));
        errors.note(self.drain(epoll, Stream::Stderr, now));
        errors.note(self.settle(epoll, now));
        errors.into_result()
    }

    /// At exit: read every relay's pipe until it is empty (`EAGAIN` or end of file, once) and
    /// write everything out, partial lines included, waiting in `poll` for slow outputs until
    /// `deadline`. Returns true if everything went out. Call this last: afterwards the relays
    /// are no longer watched correctly by epoll.
    pub fn flush_all(&mut self, deadline: Instant) -> bool {
        let mut drained: Vec<bool> = self.relays.iter().map(|r| r.eof).collect();
        loop {
            let now = Instant::now();
            let mut progress = false;
            for (i, done) in drained.iter_mut().enumerate() {
                let Some((relay, sink, ring)) = self.parts(i) else {
                    continue;
                };
                // One read per relay per round, so one endless writer cannot hold up the rest.
                if !*done {
                    let fd = relay.fd.as_raw_fd();
                    match Some(relay.free()) {
                        Some(free) if !free.is_empty() => match sys::read_nonblock(fd, free) {
                            Ok(Some(n)) if n > 0 => {
                                relay.len += n;
                                progress = true;
                            }
                            _ => *done = true,
                        },
                        _ => {}
                    }
                }
                let before = sink.queue.len();
                pump(relay, &mut sink.queue, ring, true, *done, now);
                progress |= sink.queue.len() != before;
            }
            let mut wait = Vec::with_capacity(2);
            for sink in [&mut self.out, &mut self.err] {
                let before = sink.queue.len();
                match sink.write_out() {
                    Ok(Flow::Empty) => {}
                    Ok(Flow::Blocked) => wait.extend(sink.fd().map(|fd| libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    })),
                    Err(_) => {
                        let _ = sink.break_off(None);
                    }
                }
                progress |= sink.queue.len() != before;
            }
            let finished = drained.iter().all(|&d| d)
                && self.relays.iter().all(|r| r.len == 0)
                && self.out.queue.len() == 0
                && self.err.queue.len() == 0;
            if finished {
                return true;
            }
            if now >= deadline {
                return false;
            }
            if !progress {
                if wait.is_empty() {
                    // Nothing can move and nothing to wait for (cannot happen): do not spin.
                    return false;
                }
                let ms = deadline
                    .saturating_duration_since(now)
                    .as_millis()
                    .clamp(1, i32::MAX as u128) as libc::c_int;
                // SAFETY: wait is a valid array of wait.len() pollfds. EINTR just loops.
                unsafe { libc::poll(wait.as_mut_ptr(), wait.len() as libc::nfds_t, ms) };
            }
        }
    }

    /// The last `n` records of service `name` (both streams, oldest first), from a ring of at
    /// most [`RING_LINES`] records and [`RING_BYTES`] bytes. Empty for an unknown name.
    pub fn recent(&self, name: &str, n: usize) -> Vec<RecentLine> {
        self.rings
            .iter()
            .find(|r| r.name == name)
            .map_or_else(Vec::new, |r| r.recent(n))
    }

    /// Records of service `name` newer than sequence number `seen`, and the newest sequence
    /// number (pass it back next time). A follower that fell behind by more than the ring
    /// holds gets what the ring still has. `seen = u64::MAX` just asks for the position.
    pub fn since(&self, name: &str, seen: u64) -> (Vec<RecentLine>, u64) {
        let Some(ring) = self.rings.iter().find(|r| r.name == name) else {
            return (Vec::new(), 0);
        };
        if seen >= ring.pushed {
            return (Vec::new(), ring.pushed);
        }
        let new = (ring.pushed - seen).min(usize::MAX as u64) as usize;
        (ring.recent(new), ring.pushed)
    }

    fn sink(&self, stream: Stream) -> &Sink {
        match stream {
            Stream::Stdout => &self.out,
            Stream::Stderr => &self.err,
        }
    }

    fn sink_mut(&mut self, stream: Stream) -> &mut Sink {
        match stream {
            Stream::Stdout => &mut self.out,
            Stream::Stderr => &mut self.err,
        }
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.relays.iter().position(|r| r.id == id)
    }

    /// Relay `i` with its sink and ring, borrowed together.
    fn parts(&mut self, i: usize) -> Option<(&mut Relay, &mut Sink, Option<&mut Ring>)> {
        let Logs {
            relays,
            out,
            err,
            rings,
            ..
        } = self;
        let relay = relays.get_mut(i)?;
        let sink = match relay.stream {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        let ring = rings.iter_mut().find(|r| r.name == relay.name);
        Some((relay, sink, ring))
    }

    /// Pad prefixes to at least the longest of `names` (every service that will print through
    /// the relay, known from the configuration), so the column does not move as services
    /// start one by one.
    pub fn set_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.min_width = names
            .into_iter()
            .map(|n| shown(n).chars().count())
            .max()
            .unwrap_or(0);
        self.relabel();
    }

    /// Pad every prefix to the longest (shown) name.
    fn relabel(&mut self) {
        let width = self
            .relays
            .iter()
            .map(|r| shown(&r.name).chars().count())
            .max()
            .unwrap_or(0)
            .max(self.min_width);
        for r in &mut self.relays {
            let name = shown(&r.name);
            r.first = format!("{name:<width$} | ").into_bytes();
            r.cont = format!("{name:<width$} + ").into_bytes();
        }
    }

    /// One read (one buffer at most: fairness) from relay `i`, then queue what it can.
    fn read_relay(&mut self, epoll: &Epoll, i: usize, now: Instant) -> Result<(), SysError> {
        let Some(relay) = self.relays.get_mut(i) else {
            return Ok(());
        };
        if relay.blocked || relay.eof {
            // A stale readiness from before it stopped being watched.
            return Ok(());
        }
        let fd = relay.fd.as_raw_fd();
        let Some(free) = Some(relay.free()).filter(|f| !f.is_empty()) else {
            return self.feed(epoll, i, false, now);
        };
        match sys::read_nonblock(fd, free) {
            Ok(None) => Ok(()),
            Ok(Some(n)) if n > 0 => {
                relay.len += n;
                self.feed(epoll, i, false, now)
            }
            result => {
                // End of file (every write end closed), or a read error: a level-triggered
                // fd that stays readable would wake keel forever, so stop watching it.
                relay.eof = true;
                let silenced = relay.watch(epoll, false);
                let fed = self.feed(epoll, i, true, now);
                result.map(|_| ()).and(silenced).and(fed)
            }
        }
    }

    /// Queue relay `i`'s records; if they do not all fit, stop reading it and put it in line
    /// for its sink. `force`: write out a partial line too.
    fn feed(&mut self, epoll: &Epoll, i: usize, force: bool, now: Instant) -> Result<(), SysError> {
        let Some((relay, sink, ring)) = self.parts(i) else {
            return Ok(());
        };
        // Relays already waiting for room go first: a newcomer may not slip into the room
        // the sink makes for them.
        let may = relay.blocked || sink.waiters.is_empty();
        if pump(relay, &mut sink.queue, ring, may, force, now) || relay.blocked {
            return Ok(());
        }
        relay.blocked = true;
        sink.waiters.push_back(relay.id);
        // Backpressure: while keel cannot write, it stops reading this pipe, so the service
        // blocks in write() once the pipe is full.
        relay.watch(epoll, false)
    }

    /// Write out what the sink of `stream` can take; let waiting relays in as room appears
    /// (oldest first) and watch them again once all their records are queued; watch the sink
    /// for room while records remain.
    fn drain(&mut self, epoll: &Epoll, stream: Stream, now: Instant) -> Result<(), SysError> {
        let mut errors = Errors::default();
        loop {
            let sink = self.sink_mut(stream);
            let flow = match sink.write_out() {
                Ok(flow) => flow,
                Err(e) => {
                    errors.note(Err(e));
                    errors.note(sink.break_off(Some(epoll)));
                    Flow::Empty
                }
            };
            let mut fed = false;
            while let Some(&id) = self.sink(stream).waiters.front() {
                let Some(i) = self.index(id) else {
                    self.sink_mut(stream).waiters.pop_front();
                    continue;
                };
                let Some((relay, sink, ring)) = self.parts(i) else {
                    break;
                };
                let before = sink.queue.len();
                // An ended or removed relay's last partial line goes out (once the pipe
                // holds no more of it).
                let force = relay.eof || (relay.closing && pipe_empty(&relay.fd));
                let all = pump(relay, &mut sink.queue, ring, true, force, now);
                fed |= sink.queue.len() != before;
                if !all {
                    break;
                }
                sink.waiters.pop_front();
                relay.blocked = false;
                // Its partial line waited for keel, not for the service: the rest is likely in
                // the pipe already. Restart its clock.
                relay.partial_since = (relay.len > 0).then_some(now);
                if !relay.eof {
                    errors.note(relay.watch(epoll, true));
                }
            }
            // Write again only if the queue was emptied and refilled; if the sink is full,
            // its EPOLLOUT brings keel back.
            if flow == Flow::Blocked || !fed {
                break;
            }
        }
        let sink = self.sink_mut(stream);
        let want = sink.queue.len() > 0;
        errors.note(sink.watch(epoll, want, now));
        errors.into_result()
    }

    /// Close removed relays whose pipe and buffer are empty (their last partial line is
    /// written out first).
    fn settle(&mut self, epoll: &Epoll, now: Instant) -> Result<(), SysError> {
        let mut errors = Errors::default();
        let mut i = 0;
        while let Some(relay) = self.relays.get(i) {
            let ready = relay.closing && !relay.blocked && (relay.eof || pipe_empty(&relay.fd));
            if !ready {
                i += 1;
                continue;
            }
            let stream = relay.stream;
            errors.note(self.feed(epoll, i, true, now));
            errors.note(self.drain(epoll, stream, now));
            let done = self.relays.get(i).is_some_and(|r| !r.blocked && r.len == 0);
            if !done {
                i += 1;
                continue;
            }
            let mut relay = self.relays.remove(i);
            errors.note(relay.watch(epoll, false));
            if !self.relays.iter().any(|r| r.name == relay.name) {
                self.rings.retain(|r| r.name != relay.name);
            }
            self.relabel();
            // Draining may have let an earlier relay finish: look at every relay again.
            i = 0;
        }
        errors.into_result()
    }
}

/// The first error of several steps that each go on regardless.
#[derive(Default)]
struct Errors(Option<SysError>);

impl Errors {
    fn note(&mut self, r: Result<(), SysError>) {
        if let Err(e) = r {
            self.0.get_or_insert(e);
        }
    }

    fn into_result(self) -> Result<(), SysError> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A name as shown in prefixes: cut to [`NAME_SHOWN_MAX`] bytes at a character boundary.
fn shown(name: &str) -> &str {
    let mut end = name.len().min(NAME_SHOWN_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end).unwrap_or(name)
}

/// A pipe whose read end (keel's) is non-blocking and whose write end (the service's) is not:
/// `O_NONBLOCK` belongs to each end's own open file description, so the service blocks in
/// `write` when keel stops reading, which is the backpressure. Both ends `O_CLOEXEC`.
fn pipe_for_child() -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    sys::check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblock(read.as_raw_fd())?;
    Ok((read, write))
}

fn set_nonblock(fd: RawFd) -> Result<(), SysError> {
    // SAFETY: plain fcntl on an fd we own.
    let flags = sys::check(unsafe { libc::fcntl(fd, libc::F_GETFL) }, "fcntl(F_GETFL)")?;
    // SAFETY: as above.
    sys::check(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
        "fcntl(F_SETFL)",
    )?;
    Ok(())
}

/// Whether nothing is left to read in a pipe (an error counts as empty: nothing more can be
/// read from it either).
fn pipe_empty(fd: &OwnedFd) -> bool {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    r != 0 || n == 0
}

/// Whether `fd` can take a write now (or has an error to report).
fn poll_writable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r == 1 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

fn dup_cloexec(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: plain fcntl; the new fd is owned by nobody else.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: as above.
    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
}

/// Open keel's own way of writing to `fd` without blocking and without touching `fd`'s flags.
fn open_sink(fd: RawFd) -> SinkKind {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    if fd < 0 || unsafe { libc::fstat(fd, &mut st) } != 0 {
        return SinkKind::Discard;
    }
    let dup = |kind: fn(OwnedFd) -> SinkKind| dup_cloexec(fd).map_or(SinkKind::Discard, kind);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => dup(SinkKind::Socket),
        libc::S_IFIFO | libc::S_IFCHR => {
            // A new open file description of the same pipe or tty, with its own O_NONBLOCK.
            // O_NOCTTY: as PID 1 (a session leader), opening a tty must not make it keel's
            // controlling terminal.
            let reopened = CString::new(format!("/proc/self/fd/{fd}"))
                .ok()
                .and_then(|path| {
                    // SAFETY: path is a valid C string.
                    let new = unsafe {
                        libc::open(
                            path.as_ptr(),
                            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
                        )
                    };
                    // SAFETY: open succeeded; the fd is owned by nobody else.
                    (new >= 0).then(|| unsafe { OwnedFd::from_raw_fd(new) })
                });
            match reopened {
                Some(new) => SinkKind::Reopened(new),
                None => dup(SinkKind::Polled),
            }
        }
        _ => dup(SinkKind::Plain),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::thread;

    /// A pipe standing in for keel's stdout or stderr; the test reads the other end.
    struct Out {
        read: OwnedFd,
        write: OwnedFd,
        got: Vec<u8>,
    }

    impl Out {
        fn new() -> Out {
            let mut fds = [0; 2];
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // The test's own reading end only: keel's side (`write`) stays blocking.
            set_nonblock(read.as_raw_fd()).unwrap();
            Out {
                read,
                write,
                got: Vec::new(),
            }
        }

        /// Read everything available now.
        fn take(&mut self) -> &[u8] {
            let mut buf = [0u8; 65536];
            while let Ok(Some(n)) = sys::read_nonblock(self.read.as_raw_fd(), &mut buf) {
                if n == 0 {
                    break;
                }
                self.got.extend_from_slice(&buf[..n]);
            }
            &self.got
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.got).unwrap()
        }
    }

    fn flags(fd: RawFd) -> i32 {
        unsafe { libc::fcntl(fd, libc::F_GETFL) }
    }

    /// One pass of a runtime loop: wait (at most `max`, less if a deadline is due), dispatch.
    /// Returns how many events came and the errors the relay reported.
    fn turn(logs: &mut Logs, epoll: &Epoll, max: Duration) -> (usize, Vec<SysError>) {
        let started = Instant::now();
        let mut wait = max;
        if let Some(d) = logs.next_deadline() {
            wait = wait.min(d.saturating_duration_since(started));
        }
        let mut ready = Vec::new();
        epoll
            .wait(&mut ready, wait.as_nanos().div_ceil(1_000_000) as i32)
            .unwrap();
        let mut errors = Vec::new();
        for &t in &ready {
            assert!(owns(t));
            errors.extend(logs.on_event(epoll, t, Instant::now()).err());
        }
        if logs.next_deadline().is_some_and(|d| d <= Instant::now()) {
            errors.extend(logs.on_timer(epoll, Instant::now()).err());
        }
        // Memory stays bounded however far behind the outputs are.
        assert!(logs.queued(Stream::Stdout) <= QUEUE_MAX);
        assert!(logs.queued(Stream::Stderr) <= QUEUE_MAX);
        // keel's loop never blocks: handling the events took no time.
        assert!(started.elapsed() < max + Duration::from_secs(1));
        (ready.len(), errors)
    }

    fn run_until(
        logs: &mut Logs,
        epoll: &Epoll,
        limit: Duration,
        mut done: impl FnMut(&Logs) -> bool,
    ) {
        let end = Instant::now() + limit;
        while !done(logs) {
            assert!(Instant::now() < end, "timed out");
            let (_, errors) = turn(logs, epoll, Duration::from_millis(20));
            assert!(errors.is_empty(), "{errors:?}");
        }
    }

    /// Turn until a whole `quiet` period passes without any event.
    fn run_until_idle(logs: &mut Logs, epoll: &Epoll, quiet: Duration) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < end, "never went idle");
            let (events, errors) = turn(logs, epoll, quiet);
            assert!(errors.is_empty(), "{errors:?}");
            if events == 0 && logs.next_deadline().is_none() {
                return;
            }
        }
    }

    /// Turn until keel's stdout queue is full and keel has gone idle (it stopped reading).
    fn run_until_backed_up(logs: &mut Logs, epoll: &Epoll) {
        run_until(logs, epoll, Duration::from_secs(20), |l| {
            l.queued(Stream::Stdout) > QUEUE_MAX - RECORD_MAX
        });
        run_until_idle(logs, epoll, Duration::from_millis(300));
    }

    fn write_all(fd: &OwnedFd, data: &[u8]) {
        let mut f = std::fs::File::from(fd.try_clone().unwrap());
        std::io::Write::write_all(&mut f, data).unwrap();
    }

    /// A writer thread, for more than a pipe holds.
    fn writer(fd: OwnedFd, data: Vec<u8>) -> thread::JoinHandle<()> {
        thread::spawn(move || write_all(&fd, &data))
    }

    fn seq_lines(name: &str, n: u32) -> String {
        (1..=n).map(|i| format!("{name} | {i}\n")).collect()
    }

    #[test]
    fn tokens_are_in_their_own_range() {
        assert!(owns(TOKEN_SINK_OUT) && owns(TOKEN_SINK_ERR) && owns(TOKEN_RELAY | 7));
        // The runtime's signalfd (0) and exec-status pipes (1 << 32 | pid) are not ours.
        assert!(!owns(0) && !owns(1 << 32 | 1234) && !owns(3 << 32));
    }

    #[test]
    fn lines_get_the_prefix_and_go_to_their_stream() {
        let epoll = Epoll::new().unwrap();
        let (mut o, mut e) = (Out::new(), Out::new());
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), e.write.as_raw_fd());
        let (_, w_out) = logs.add(&epoll, "web", Stream::Stdout).unwrap();
        let (_, w_err) = logs.add(&epoll, "web", Stream::Stderr).unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "echo out1; echo err1 >&2; echo out2"])
            .stdout(Stdio::from(w_out))
            .stderr(Stdio::from(w_err))
            .spawn()
            .unwrap();
        run_until(&mut logs, &epoll, Duration::from_secs(10), |_| {
            o.take() == b"web | out1\nweb | out2\n" && e.take() == b"web | err1\n"
        });
        child.wait().unwrap();
        let recent = logs.recent("web", 10);
        assert_eq!(recent.len(), 3);
        let err_line = RecentLine {
            stream: Stream::Stderr,
            continued: false,
            text: b"err1".to_vec(),
        };
        assert!(recent.contains(&err_line));
        assert_eq!(logs.recent("web", 1).len(), 1);
        assert!(logs.recent("nobody", 10).is_empty());
    }

    #[test]
    fn names_are_padded_to_the_longest() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, a) = logs.add(&epoll, "a", Stream::Stdout).unwrap();
        let (_, b) = logs.add(&epoll, "longer", Stream::Stdout).unwrap();
        write_all(&a, b"x\n");
        run_until(&mut logs, &epoll, Duration::from_secs(5), |_| {
            o.take() == b"a      | x\n"
        });
        write_all(&b, b"y\n");
        run_until(&mut logs, &epoll, Duration::from_secs(5), |_| {
            o.take() == b"a      | x\nlonger | y\n"
        });
    }

    #[test]
    fn partial_line_waits_for_its_end_then_goes_out_on_the_timer() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "p", Stream::Stdout).unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "printf 'prompt> '; sleep 1; echo yes"])
            .stdout(Stdio::from(w))
            .spawn()
            .unwrap();
        // The prompt was read: a deadline is set, and nothing is written yet.
        run_until(&mut logs, &epoll, Duration::from_secs(10), |l| {
            l.next_deadline().is_some()
        });
        let due = logs.next_deadline().unwrap();
        assert!(due <= Instant::now() + PARTIAL_DELAY);
        assert!(o.take().is_empty());
        run_until(&mut logs, &epoll, Duration::from_secs(10), |_| {
            !o.take().is_empty()
        });
        assert!(Instant::now() >= due);
        assert_eq!(o.text(), "p | prompt> \n");
        assert_eq!(logs.next_deadline(), None);
        // The rest of the line continues it.
        run_until(&mut logs, &epoll, Duration::from_secs(10), |_| {
            o.take() == b"p | prompt> \np + yes\n"
        });
        child.wait().unwrap();
        let recent = logs.recent("p", 10);
        assert_eq!(recent.len(), 2);
        assert!(recent[1].continued && recent[1].text == b"yes");
    }

    #[test]
    fn flush_all_reads_the_pipes_and_writes_partial_lines() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "x", Stream::Stdout).unwrap();
        write_all(&w, b"abc\ndef");
        run_until(&mut logs, &epoll, Duration::from_secs(5), |l| {
            l.next_deadline().is_some()
        });
        assert_eq!(o.take(), b"x | abc\n");
        // Still in the pipe at exit: read too.
        write_all(&w, b"-more\nghi");
        assert!(logs.flush_all(Instant::now() + Duration::from_secs(5)));
        assert_eq!(o.take(), b"x | abc\nx | def-more\nx | ghi\n");
    }

    #[test]
    fn end_of_file_writes_the_last_partial_line() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "x", Stream::Stdout).unwrap();
        write_all(&w, b"one\nno newline");
        drop(w);
        run_until(&mut logs, &epoll, Duration::from_secs(5), |_| {
            o.take() == b"x | one\nx | no newline\n"
        });
        // An ended pipe is not watched any more: keel goes idle.
        run_until_idle(&mut logs, &epoll, Duration::from_millis(100));
    }

    #[test]
    fn a_one_megabyte_line_is_split_losslessly_at_character_boundaries() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "big", Stream::Stdout).unwrap();
        let alphabet = ['a', 'b', 'é', '€', '𝄞', 'z'];
        let mut line = String::new();
        let mut i = 0;
        while line.len() < 1 << 20 {
            line.push(alphabet[i % alphabet.len()]);
            i = (i * 7 + 3) % 1_000_003;
        }
        let mut data = line.clone().into_bytes();
        data.extend_from_slice(b"\nshort\n");
        let t = writer(w, data);
        run_until(&mut logs, &epoll, Duration::from_secs(30), |_| {
            o.take().ends_with(b"big | short\n")
        });
        t.join().unwrap();
        let text = o.text();
        let records: Vec<&str> = text.split_terminator('\n').collect();
        assert!(records.len() > (1 << 20) / RECORD_MAX);
        let mut rebuilt = String::new();
        for (n, r) in records.iter().enumerate() {
            assert!(r.len() < RECORD_MAX, "record {n} is {} bytes", r.len());
            let body = if n == 0 {
                r.strip_prefix("big | ")
            } else if n == records.len() - 1 {
                assert_eq!(*r, "big | short");
                continue;
            } else {
                r.strip_prefix("big + ")
            };
            rebuilt.push_str(body.unwrap());
        }
        assert!(rebuilt == line, "the line came back different");
    }

    /// `n` lines from a real `seq` into relay `flood`, sink not read: keel must stop reading
    /// (the writer blocks), stay idle and bounded; `while_blocked` runs then; then, the sink
    /// read, every line arrives once, in order. `read_sink` reads what the sink has.
    fn flood_and_drain(
        logs: &mut Logs,
        epoll: &Epoll,
        n: u32,
        while_blocked: impl FnOnce(&mut Logs, &Epoll),
        mut read_sink: impl FnMut() -> String,
    ) {
        let (_, w) = logs.add(epoll, "flood", Stream::Stdout).unwrap();
        // A non-blocking description of the service's pipe, to test that it filled up.
        let probe = {
            let path = CString::new(format!("/proc/self/fd/{}", w.as_raw_fd())).unwrap();
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            assert!(fd >= 0);
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let mut child = Command::new("seq")
            .args(["1", &n.to_string()])
            .stdout(Stdio::from(w))
            .spawn()
            .unwrap();
        // Nobody reads the sink: keel runs out of room and stops reading the service.
        run_until_backed_up(logs, epoll);
        assert!(child.try_wait().unwrap().is_none(), "seq was not held back");
        let chunk = [b'!'; libc::PIPE_BUF];
        let r = unsafe { libc::write(probe.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
        assert_eq!(r, -1, "the service's pipe is not full");
        assert_eq!(sys::errno(), libc::EAGAIN);
        drop(probe);
        let queued = logs.queued(Stream::Stdout);
        while_blocked(logs, epoll);
        assert_eq!(logs.queued(Stream::Stdout), queued);
        // Now read: everything arrives, exactly once, in order.
        let want = seq_lines("flood", n);
        let mut got = String::new();
        run_until(logs, epoll, Duration::from_secs(60), |_| {
            got.push_str(&read_sink());
            got.len() >= want.len()
        });
        if got != want {
            let at = got
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            let from = at.saturating_sub(60);
            panic!(
                "lines lost, repeated or reordered at byte {at} of {}: got {:?}, want {:?}",
                want.len(),
                &got[from..(at + 60).min(got.len())],
                &want[from..(at + 60).min(want.len())]
            );
        }
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_flood_into_a_pipe_is_held_back_bounded_and_lossless() {
        let epoll = Epoll::new().unwrap();
        let (mut o, mut e) = (Out::new(), Out::new());
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), e.write.as_raw_fd());
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Reopened);
        let (_, q) = logs.add(&epoll, "quiet", Stream::Stderr).unwrap();
        // A quiet service on the other sink gets through while stdout is backed up.
        let quiet_gets_through = |logs: &mut Logs, epoll: &Epoll| {
            let mut quiet = Command::new("sh")
                .args(["-c", "echo hello; echo bye"])
                .stdout(Stdio::from(q))
                .spawn()
                .unwrap();
            run_until(logs, epoll, Duration::from_secs(10), |_| {
                e.take() == b"quiet | hello\nquiet | bye\n"
            });
            quiet.wait().unwrap();
        };
        flood_and_drain(&mut logs, &epoll, 200_000, quiet_gets_through, || {
            let before = o.got.len();
            o.take();
            String::from_utf8(o.got[before..].to_vec()).unwrap()
        });
        // keel's fd for its stdout was never made non-blocking.
        assert_eq!(flags(o.write.as_raw_fd()) & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_flood_into_a_socket_is_held_back_bounded_and_lossless() {
        let epoll = Epoll::new().unwrap();
        let mut fds = [0; 2];
        assert_eq!(
            unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            },
            0
        );
        let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        set_nonblock(peer.as_raw_fd()).unwrap();
        let mut logs = Logs::with_sinks(ours.as_raw_fd(), -1);
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Socket);
        assert_eq!(logs.sink_mode(Stream::Stderr), SinkMode::Discard);
        flood_and_drain(
            &mut logs,
            &epoll,
            100_000,
            |_, _| {},
            || {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while let Ok(Some(n)) = sys::read_nonblock(peer.as_raw_fd(), &mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                String::from_utf8(got).unwrap()
            },
        );
        assert_eq!(flags(ours.as_raw_fd()) & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_flooding_service_does_not_starve_another() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, a) = logs.add(&epoll, "a", Stream::Stdout).unwrap();
        let (_, b) = logs.add(&epoll, "b", Stream::Stdout).unwrap();
        // Both pipes hold far more than one read takes when keel first looks.
        let block: String = (0..6000).map(|i| format!("{i:08}\n")).collect();
        write_all(&a, block.as_bytes());
        write_all(&b, block.as_bytes());
        let want = block.len() * 2 + 2 * 6000 * "a | ".len();
        run_until(&mut logs, &epoll, Duration::from_secs(10), |_| {
            o.take().len() >= want
        });
        let text = o.text();
        let first_b = text.find("b | ").unwrap();
        let last_a = text.rfind("a | ").unwrap();
        assert!(
            first_b < last_a,
            "a was read to the end before b got a turn"
        );
        for name in ["a", "b"] {
            let lines: String = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{name} | ")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert!(lines == block, "{name}'s lines differ");
        }
    }

    #[test]
    fn a_tty_sink_is_reopened_and_the_tty_stays_blocking() {
        let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(master >= 0);
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        assert_eq!(unsafe { libc::grantpt(master.as_raw_fd()) }, 0);
        assert_eq!(unsafe { libc::unlockpt(master.as_raw_fd()) }, 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) },
            0
        );
        let slave = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        assert!(slave >= 0);
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        let epoll = Epoll::new().unwrap();
        let mut logs = Logs::with_sinks(slave.as_raw_fd(), slave.as_raw_fd());
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Reopened);
        let (_, w) = logs.add(&epoll, "t", Stream::Stderr).unwrap();
        write_all(&w, b"on the tty\n");
        set_nonblock(master.as_raw_fd()).unwrap();
        let mut got = Vec::new();
        run_until(&mut logs, &epoll, Duration::from_secs(5), |_| {
            let mut buf = [0u8; 256];
            while let Ok(Some(n)) = sys::read_nonblock(master.as_raw_fd(), &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got == b"t | on the tty\r\n"
        });
        assert_eq!(flags(slave.as_raw_fd()) & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_regular_file_sink_shares_the_offset() {
        let path = std::env::temp_dir().join(format!("keel-logs-test-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let fd = OwnedFd::from(file);
        write_all(&fd, b"before\n");
        let epoll = Epoll::new().unwrap();
        let mut logs = Logs::with_sinks(fd.as_raw_fd(), -1);
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Plain);
        let (_, w) = logs.add(&epoll, "f", Stream::Stdout).unwrap();
        write_all(&w, b"one\ntwo\n");
        run_until(&mut logs, &epoll, Duration::from_secs(5), |l| {
            l.recent("f", 10).len() == 2 && l.queued(Stream::Stdout) == 0
        });
        // Written at the shared offset: after "before", and the next write comes after.
        write_all(&fd, b"after\n");
        let content = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(content, "before\nf | one\nf | two\nafter\n");
    }

    #[test]
    fn without_outputs_lines_are_dropped_not_held() {
        let epoll = Epoll::new().unwrap();
        let mut logs = Logs::with_sinks(-1, -1);
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Discard);
        let (_, w) = logs.add(&epoll, "d", Stream::Stdout).unwrap();
        let mut child = Command::new("seq")
            .args(["1", "50000"])
            .stdout(Stdio::from(w))
            .spawn()
            .unwrap();
        run_until(&mut logs, &epoll, Duration::from_secs(20), |l| {
            l.recent("d", 1).first().is_some_and(|r| r.text == b"50000")
        });
        assert!(child.wait().unwrap().success());
    }

    #[test]
    fn a_broken_sink_is_reported_once_then_discards() {
        broken_sink(false);
    }

    /// A named FIFO that lost its reader cannot be re-opened with O_NONBLOCK (ENXIO; the
    /// kernel skips that check for anonymous pipes): keel falls back to polling before each
    /// write, and finds the error.
    #[test]
    fn a_fifo_without_reader_is_polled_then_discards() {
        broken_sink(true);
    }

    fn broken_sink(named_fifo: bool) {
        let epoll = Epoll::new().unwrap();
        let (write, mode) = if named_fifo {
            let path = std::env::temp_dir().join(format!("keel-logs-fifo-{}", std::process::id()));
            let c = CString::new(path.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let open = |flags| {
                let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
                assert!(fd >= 0);
                unsafe { OwnedFd::from_raw_fd(fd) }
            };
            // A reader first (O_RDWR never waits), so the writer's open does not wait either.
            let reader = open(libc::O_RDWR);
            let write = open(libc::O_WRONLY);
            std::fs::remove_file(&path).unwrap();
            drop(reader);
            (write, SinkMode::Polled)
        } else {
            let o = Out::new();
            (o.write, SinkMode::Reopened)
        };
        let mut logs = Logs::with_sinks(write.as_raw_fd(), -1);
        assert_eq!(logs.sink_mode(Stream::Stdout), mode);
        let (_, w) = logs.add(&epoll, "b", Stream::Stdout).unwrap();
        let mut child = Command::new("seq")
            .args(["1", "20000"])
            .stdout(Stdio::from(w))
            .spawn()
            .unwrap();
        let mut errors = Vec::new();
        let end = Instant::now() + Duration::from_secs(20);
        while logs
            .recent("b", 1)
            .first()
            .is_none_or(|r| r.text != b"20000")
        {
            assert!(
                Instant::now() < end,
                "the service was held back by a dead output"
            );
            errors.extend(turn(&mut logs, &epoll, Duration::from_millis(20)).1);
        }
        assert!(child.wait().unwrap().success());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].errno, libc::EPIPE);
        assert!(errors[0].to_string().contains("stdout"));
        assert_eq!(logs.sink_mode(Stream::Stdout), SinkMode::Discard);
    }

    #[test]
    fn remove_writes_what_is_left_then_closes() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (id, w) = logs.add(&epoll, "r", Stream::Stdout).unwrap();
        write_all(&w, b"one\ntwo");
        logs.remove(&epoll, id, Instant::now()).unwrap();
        run_until(&mut logs, &epoll, Duration::from_secs(5), |_| {
            o.take() == b"r | one\nr | two\n"
        });
        // keel's read end is closed: the writer now gets EPIPE.
        let r = unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!((r, sys::errno()), (-1, libc::EPIPE));
        assert!(logs.recent("r", 10).is_empty());
        assert_eq!(logs.next_deadline(), None);
    }

    #[test]
    fn remove_of_an_empty_relay_closes_at_once() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (id, w) = logs.add(&epoll, "r", Stream::Stdout).unwrap();
        write_all(&w, b"half");
        run_until(&mut logs, &epoll, Duration::from_secs(5), |l| {
            l.next_deadline().is_some()
        });
        logs.remove(&epoll, id, Instant::now()).unwrap();
        assert_eq!(o.take(), b"r | half\n");
        let r = unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!((r, sys::errno()), (-1, libc::EPIPE));
    }

    #[test]
    fn the_ring_keeps_the_last_lines_within_its_bounds() {
        let epoll = Epoll::new().unwrap();
        let mut logs = Logs::with_sinks(-1, -1);
        let (_, w) = logs.add(&epoll, "many", Stream::Stdout).unwrap();
        let t = writer(w, seq_lines("", 300).replace(" | ", "").into_bytes());
        run_until(&mut logs, &epoll, Duration::from_secs(5), |l| {
            l.recent("many", 1)
                .first()
                .is_some_and(|r| r.text == b"300")
        });
        t.join().unwrap();
        let all = logs.recent("many", 1000);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].text, b"45");
        let (_, w) = logs.add(&epoll, "wide", Stream::Stdout).unwrap();
        let t = writer(w, format!("{}\n", "w".repeat(999)).repeat(100).into_bytes());
        run_until(&mut logs, &epoll, Duration::from_secs(5), |l| {
            l.recent("wide", 1000).len() == RING_BYTES / 1000
        });
        t.join().unwrap();
        run_until_idle(&mut logs, &epoll, Duration::from_millis(50));
        assert_eq!(logs.recent("wide", 1000).len(), RING_BYTES / 1000);
    }

    #[test]
    fn flush_all_gives_up_at_the_deadline() {
        let epoll = Epoll::new().unwrap();
        let o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "s", Stream::Stdout).unwrap();
        let lines = seq_lines("", 100_000).replace(" | ", "").into_bytes();
        let t = writer(w, lines);
        run_until_idle(&mut logs, &epoll, Duration::from_millis(200));
        let start = Instant::now();
        assert!(!logs.flush_all(start + Duration::from_millis(300)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3));
        drop(o);
        // The writer thread is still blocked on its pipe: close our end to release it.
        drop(logs);
        t.join().unwrap_err();
    }

    /// Short distinct-ish lines: `a`, `b`, ... `z`, `a`, ... (2 bytes each in the pipe).
    fn letters(n: usize) -> String {
        (0..n)
            .map(|i| format!("{}\n", (b'a' + (i % 26) as u8) as char))
            .collect()
    }

    #[test]
    fn remove_while_backed_up_still_delivers_everything() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (id, w) = logs.add(&epoll, "r", Stream::Stdout).unwrap();
        let data = letters(100_000);
        let t = writer(w, data.clone().into_bytes());
        run_until_backed_up(&mut logs, &epoll);
        logs.remove(&epoll, id, Instant::now()).unwrap();
        let want: String = data.lines().map(|l| format!("r | {l}\n")).collect();
        run_until(&mut logs, &epoll, Duration::from_secs(30), |l| {
            o.take();
            l.recent("r", 1).is_empty()
        });
        t.join().unwrap();
        assert!(o.text() == want, "lines lost or reordered");
    }

    #[test]
    fn flush_all_waits_for_a_slow_output() {
        let epoll = Epoll::new().unwrap();
        let mut o = Out::new();
        let mut logs = Logs::with_sinks(o.write.as_raw_fd(), -1);
        let (_, w) = logs.add(&epoll, "s", Stream::Stdout).unwrap();
        // Fits in the service's pipe, but not, prefixed, in keel's queue and output pipe.
        let data = letters(30_000);
        write_all(&w, data.as_bytes());
        run_until_backed_up(&mut logs, &epoll);
        let read = o.read.try_clone().unwrap();
        let reader = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                match sys::read_nonblock(read.as_raw_fd(), &mut buf).unwrap() {
                    Some(0) => break,
                    Some(n) => got.extend_from_slice(&buf[..n]),
                    None => thread::sleep(Duration::from_millis(1)),
                }
            }
            got
        });
        assert!(logs.flush_all(Instant::now() + Duration::from_secs(10)));
        drop(logs);
        drop(o.write);
        let want: String = data.lines().map(|l| format!("s | {l}\n")).collect();
        let got = reader.join().unwrap();
        assert!(got == want.as_bytes(), "lines lost or reordered");
        o.got.clear();
    }
}
