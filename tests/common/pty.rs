//! A pseudo-terminal and a reader of what it shows, for job-control tests (`docker run -it`,
//! an interactive shell under keel).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pty pair.
pub struct Pty {
    pub master: std::fs::File,
    pub slave: OwnedFd,
}

/// Allocate a pty pair (both ends CLOEXEC, the slave not made a controlling terminal).
pub fn open_pty() -> Pty {
    // SAFETY: standard pty allocation; every result is checked.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0, "open the pty slave");
        Pty {
            master: std::fs::File::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

/// Everything the terminal showed so far, collected by a reader thread.
pub struct Screen(pub Arc<Mutex<String>>);

impl Screen {
    /// Collect everything `master` shows, from a reader thread.
    pub fn watch(mut master: std::fs::File) -> Screen {
        let buf = Arc::new(Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = master.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Screen(buf)
    }

    /// Everything shown so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Wait until a line of output satisfies `ok`; returns that line.
    pub fn expect(&self, what: &str, ok: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self
                .text()
                .lines()
                .map(|l| l.trim_end_matches('\r'))
                .find(|l| ok(l))
            {
                return Ok(l.to_string());
            }
            if Instant::now() > deadline {
                return Err(format!("{what} never showed; screen:\n{}", self.text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
