//! The keel binary: a C `main` so that Rust's runtime start-up (which sets SIGPIPE to SIG_IGN,
//! losing the disposition the child must inherit) never runs, and start-up stays minimal.

#![no_main]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::os::unix::ffi::OsStringExt;

/// The process entry point, called by the C library's start-up code.
///
/// # Safety
/// `argv` must hold `argc` valid C strings, as the C runtime guarantees.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let mut args = Vec::with_capacity(argc.max(0) as usize);
    for i in 0..argc.max(0) as usize {
        // SAFETY: the C runtime passes argc valid NUL-terminated strings in argv.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: p is a valid C string (see above).
        let bytes = unsafe { CStr::from_ptr(p) }.to_bytes().to_vec();
        args.push(OsString::from_vec(bytes));
    }
    keel::entry(args) as c_int
}
