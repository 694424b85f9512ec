//! Values with units in configuration files: sizes (`512M`, `1G`, `50%`, `max`), CPU quotas
//! (`150%`), counts, umasks, resource limits, io-max entries, TCP addresses. Each parser
//! returns the error text for the caller to place.

use super::schema::{IoMaxLayer, RlimitValue, StrOrInt};
use crate::plan::{IoMax, Rlimit, Size};
use std::net::SocketAddr;

/// `4096`, `512K`, `64M`, `1G`, `1T` (powers of 1024), `50%` (of the machine's memory, resolved
/// when applied), or `max`/`infinity`.
pub fn size(text: &str) -> Result<Size, String> {
    let t = text.trim();
    if matches!(t, "max" | "infinity") {
        return Ok(Size::Max);
    }
    if let Some(p) = t.strip_suffix('%') {
        let pct = percent_hundredths(p)?;
        if pct == 0 || pct > 10_000 {
            return Err(format!("'{text}' must be between 0% and 100%"));
        }
        return Ok(Size::Percent(pct));
    }
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (write e.g. 512M, 1G, 4096, 50% or max)"))?;
    n.checked_mul(mult)
        .map(Size::Bytes)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A percentage with up to two decimals, in hundredths: `12.5` → 1250.
fn percent_hundredths(p: &str) -> Result<u32, String> {
    let bad = || format!("'{p}%' is not a percentage (write e.g. 50% or 12.5%)");
    let (int, frac) = p.trim().split_once('.').unwrap_or((p.trim(), ""));
    if int.is_empty() || frac.len() > 2 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u32 = int.parse().map_err(|_| bad())?;
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// CPU quota in hundredths of a percent of one CPU: `150%` → 15000 (over 100% allowed).
pub fn percent(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let Some(p) = t.strip_suffix('%') else {
        return Err(format!(
            "'{text}' needs a % sign (e.g. 50% of one CPU, 200% for two)"
        ));
    };
    let v = percent_hundredths(p)?;
    if v == 0 {
        return Err("a quota of 0% would stop the service; remove cpu-quota instead".into());
    }
    Ok(v)
}

/// A positive count, or `max`.
pub fn count_or_max(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if matches!(t, "max" | "infinity") {
        return Ok(None);
    }
    match t.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("'{text}' is not a positive number or max")),
    }
}

/// An octal umask: `022`, `0027` (or an integer written in octal digits).
pub fn umask(text: &str) -> Result<u32, String> {
    let t = text.trim();
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("'{text}' is not an octal umask (e.g. \"022\")")),
    }
}

const RLIMITS: &[(&str, i32)] = &[
    ("as", libc::RLIMIT_AS as i32),
    ("core", libc::RLIMIT_CORE as i32),
    ("cpu", libc::RLIMIT_CPU as i32),
    ("data", libc::RLIMIT_DATA as i32),
    ("fsize", libc::RLIMIT_FSIZE as i32),
    ("locks", libc::RLIMIT_LOCKS as i32),
    ("memlock", libc::RLIMIT_MEMLOCK as i32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
    ("nice", libc::RLIMIT_NICE as i32),
    ("nofile", libc::RLIMIT_NOFILE as i32),
    ("nproc", libc::RLIMIT_NPROC as i32),
    ("rss", libc::RLIMIT_RSS as i32),
    ("rtprio", libc::RLIMIT_RTPRIO as i32),
    ("sigpending", libc::RLIMIT_SIGPENDING as i32),
    ("stack", libc::RLIMIT_STACK as i32),
];

fn rlim_value(v: &StrOrInt) -> Result<u64, String> {
    match v {
        StrOrInt::Str(s) if matches!(s.as_str(), "infinity" | "unlimited") => {
            Ok(libc::RLIM_INFINITY)
        }
        StrOrInt::Int(i) if *i >= 0 => Ok(*i as u64),
        StrOrInt::Str(s) => match size(s)? {
            Size::Bytes(b) => Ok(b),
            _ => Err(format!("'{s}' is not a limit (a number, 64M, or infinity)")),
        },
        StrOrInt::Int(i) => Err(format!("{i} is negative")),
    }
}

/// `nofile = 1024`, `nofile = [1024, 4096]`, `core = "infinity"`.
pub fn rlimit(name: &str, v: &RlimitValue) -> Result<Rlimit, String> {
    let Some((_, resource)) = RLIMITS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
        return Err(format!("unknown limit; use one of: {}", names.join(", ")));
    };
    let (soft, hard) = match v {
        RlimitValue::One(x) => {
            let n = rlim_value(x)?;
            (n, n)
        }
        RlimitValue::Pair(p) if p.len() == 2 => (rlim_value(&p[0])?, rlim_value(&p[1])?),
        RlimitValue::Pair(_) => return Err("write one value or [soft, hard]".into()),
    };
    if soft > hard {
        return Err("the soft limit is above the hard limit".into());
    }
    Ok(Rlimit {
        resource: *resource,
        soft,
        hard,
    })
}

/// A `"MAJOR:MINOR"` or `/dev/...` device with its rbps/wbps/riops/wiops.
pub fn io_max(device: &str, v: &IoMaxLayer) -> Result<IoMax, String> {
    let is_numbers = device
        .split_once(':')
        .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
    if !is_numbers && !device.starts_with("/dev/") {
        return Err("name the device as \"MAJOR:MINOR\" (e.g. \"8:0\") or a /dev path".into());
    }
    let get = |x: &Option<StrOrInt>| -> Result<Option<u64>, String> {
        match x {
            None => Ok(None),
            Some(x) => match size(&x.text())? {
                Size::Bytes(b) if b > 0 => Ok(Some(b)),
                Size::Max => Ok(None),
                _ => Err(format!("'{}' is not a positive rate", x.text())),
            },
        }
    };
    let m = IoMax {
        device: device.to_string(),
        rbps: get(&v.rbps)?,
        wbps: get(&v.wbps)?,
        riops: get(&v.riops)?,
        wiops: get(&v.wiops)?,
    };
    if m.rbps.is_none() && m.wbps.is_none() && m.riops.is_none() && m.wiops.is_none() {
        return Err("set at least one of rbps, wbps, riops, wiops".into());
    }
    Ok(m)
}

/// `8080` (on 127.0.0.1), `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`.
pub fn tcp_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if let Ok(port) = t.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = t
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    // Host names are not resolved: a readiness check must not depend on DNS (and the
    // resolver would cost PID 1 ~20 KB).
    Err(format!(
        "'{text}' is not a port, IP:port, [IPv6]:port or localhost:port (host names are not resolved)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("4096"), Ok(Size::Bytes(4096)));
        assert_eq!(size("512K"), Ok(Size::Bytes(512 << 10)));
        assert_eq!(size("64M"), Ok(Size::Bytes(64 << 20)));
        assert_eq!(size("1G"), Ok(Size::Bytes(1 << 30)));
        assert_eq!(size("max"), Ok(Size::Max));
        assert_eq!(size("50%"), Ok(Size::Percent(5000)));
        assert_eq!(size("12.5%"), Ok(Size::Percent(1250)));
        for bad in [
            "",
            "M",
            "1.5G",
            "-1",
            "101%",
            "0%",
            "1Q",
            "99999999999999999999G",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quotas_counts_umasks() {
        assert_eq!(percent("20%"), Ok(2000));
        assert_eq!(percent("150%"), Ok(15000));
        assert!(percent("20").is_err());
        assert!(percent("0%").is_err());
        assert_eq!(count_or_max("64"), Ok(Some(64)));
        assert_eq!(count_or_max("max"), Ok(None));
        assert!(count_or_max("0").is_err());
        assert_eq!(umask("022"), Ok(0o22));
        assert!(umask("999").is_err());
    }

    #[test]
    fn rlimits_and_io() {
        let r = rlimit("nofile", &RlimitValue::One(StrOrInt::Int(1024))).unwrap();
        assert_eq!((r.soft, r.hard), (1024, 1024));
        let r = rlimit("core", &RlimitValue::One(StrOrInt::Str("infinity".into()))).unwrap();
        assert_eq!(r.hard, libc::RLIM_INFINITY);
        assert!(rlimit("files", &RlimitValue::One(StrOrInt::Int(1))).is_err());
        assert!(
            rlimit(
                "nofile",
                &RlimitValue::Pair(vec![StrOrInt::Int(10), StrOrInt::Int(5)])
            )
            .is_err()
        );
        let io = IoMaxLayer {
            rbps: Some(StrOrInt::Str("10M".into())),
            ..Default::default()
        };
        assert_eq!(io_max("8:0", &io).unwrap().rbps, Some(10 << 20));
        assert!(io_max("sda", &io).is_err());
        assert!(io_max("8:0", &IoMaxLayer::default()).is_err());
    }

    #[test]
    fn tcp() {
        assert_eq!(tcp_addr("8080").unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(tcp_addr("127.0.0.1:80").unwrap().port(), 80);
        assert!(tcp_addr("nope").is_err());
    }
}
