//! Users, groups and env files, resolved when the configuration is read, so an unknown user
//! is an error before anything starts and the child only makes `setgroups`/`setgid`/`setuid`
//! calls with numbers (no NSS lookups between fork and exec).
//!
//! Reads `/etc/passwd` and `/etc/group` directly: a static binary has no NSS modules, and
//! container images keep their users in these files.

use std::ffi::OsString;
use std::path::Path;

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// The user and group tables.
#[derive(Debug, Default, Clone)]
pub struct Db {
    users: Vec<User>,
    /// (name, gid, members)
    groups: Vec<(String, u32, Vec<String>)>,
}

impl Db {
    /// Read `/etc/passwd` and `/etc/group` (missing files are empty tables).
    pub fn load() -> Db {
        Db::parse(
            &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
            &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        )
    }

    /// Build from the files' texts.
    pub fn parse(passwd: &str, group: &str) -> Db {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7).then(|| {
                    Some(User {
                        name: f[0].to_string(),
                        uid: f[2].parse().ok()?,
                        gid: f[3].parse().ok()?,
                        home: f[5].to_string(),
                    })
                })?
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 4 {
                    return None;
                }
                let members = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                Some((f[0].to_string(), f[2].parse().ok()?, members))
            })
            .collect();
        Db { users, groups }
    }

    /// A user by name or numeric id. A number not in the table is still a valid uid (with
    /// gid = uid's own number is not assumed: the primary group is 0 unless `group` is set).
    pub fn user(&self, name_or_id: &str) -> Result<User, String> {
        if let Some(u) = self.users.iter().find(|u| u.name == name_or_id) {
            return Ok(u.clone());
        }
        if let Ok(uid) = name_or_id.parse::<u32>() {
            return Ok(self
                .users
                .iter()
                .find(|u| u.uid == uid)
                .cloned()
                .unwrap_or(User {
                    name: uid.to_string(),
                    uid,
                    gid: 0,
                    home: "/".into(),
                }));
        }
        Err(format!(
            "no user '{name_or_id}' in /etc/passwd; create it in the image or use a numeric uid"
        ))
    }

    /// A group by name or numeric id.
    pub fn group(&self, name_or_id: &str) -> Result<u32, String> {
        if let Some((_, gid, _)) = self.groups.iter().find(|(n, _, _)| n == name_or_id) {
            return Ok(*gid);
        }
        name_or_id.parse::<u32>().map_err(|_| {
            format!(
                "no group '{name_or_id}' in /etc/group; create it in the image or use a numeric gid"
            )
        })
    }

    /// What `initgroups(user, gid)` would set: the primary group and every group listing the
    /// user as a member.
    pub fn groups_of(&self, user: &str, gid: u32) -> Vec<u32> {
        let mut v = vec![gid];
        for (_, g, members) in &self.groups {
            if members.iter().any(|m| m == user) && !v.contains(g) {
                v.push(*g);
            }
        }
        v
    }
}

/// Read an env file: `KEY=value` lines; blank lines and `#` comments skipped; an optional
/// `export ` prefix; values in single or double quotes are unquoted.
pub fn read_env_file(path: &Path) -> Result<Vec<(OsString, OsString)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(format!("{}:{}: expected KEY=value", path.display(), i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "{}:{}: '{k}' is not a variable name",
                path.display(),
                i + 1
            ));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        vars.push((OsString::from(k), OsString::from(v)));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:web:/var/www:/bin/false\nbad line\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nlogs:x:4:www,other\nvideo:x:44:other\n";

    #[test]
    fn users_and_groups() {
        let db = Db::parse(PASSWD, GROUP);
        let u = db.user("www").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (33, 33, "/var/www"));
        assert_eq!(db.user("33").unwrap().name, "www");
        assert_eq!(db.user("1234").unwrap().uid, 1234);
        assert!(db.user("nobody-here").unwrap_err().contains("/etc/passwd"));
        assert_eq!(db.group("logs"), Ok(4));
        assert_eq!(db.group("7"), Ok(7));
        assert!(db.group("nope").is_err());
        assert_eq!(db.groups_of("www", 33), vec![33, 4]);
    }

    #[test]
    fn env_files() {
        let dir = std::env::temp_dir().join(format!("keel-envfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("env");
        std::fs::write(&f, "# c\n\nA=1\nexport B=\"two words\"\nC='x'\n").unwrap();
        let v = read_env_file(&f).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], (OsString::from("B"), OsString::from("two words")));
        std::fs::write(&f, "A=1\nnot a var\n").unwrap();
        assert!(read_env_file(&f).unwrap_err().contains(":2:"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
