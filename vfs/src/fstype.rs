//! Filesystem types registered by name, and the mount-data parser every
//! filesystem shares.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::abi::*;
use crate::cred::Credentials;
use crate::inode::{FilesystemOps, Inode};
use crate::Vfs;

/// What a filesystem type allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsTypeOptions {
    /// `mount(2)` from a sandboxed process may create it.
    pub allow_user_mount: bool,
    /// It is listed in `/proc/filesystems`.
    pub allow_user_list: bool,
    /// It needs no block device (`nodev` in `/proc/filesystems`).
    pub nodev: bool,
}

/// What a filesystem type is asked to build.
pub struct MountRequest<'a> {
    /// The VFS, for the clock and the device numbers.
    pub vfs: &'a Arc<Vfs>,
    /// Who mounts.
    pub cred: &'a Credentials,
    /// The source argument of `mount(2)`.
    pub source: &'a [u8],
    /// The mount flags.
    pub flags: MountFlags,
    /// The parsed data argument.
    pub data: &'a MountData,
    /// Where path options (`lowerdir=`, `lower_path=`) are resolved from:
    /// the mounting process's root and working directory. `None` for
    /// mounts an embedder makes outside any process.
    pub at: Option<PathBase<'a>>,
}

/// A root and a working directory to resolve paths from.
#[derive(Clone, Copy)]
pub struct PathBase<'a> {
    /// The root (`/` and the `..` limit).
    pub root: &'a crate::mount::VirtualDentry,
    /// The start of relative paths.
    pub cwd: &'a crate::mount::VirtualDentry,
}

impl MountRequest<'_> {
    /// Resolves a path option to a location, following symbolic links, with
    /// the mounter's credentials. `EINVAL` when there is nowhere to resolve from.
    pub fn lookup(&self, path: &[u8]) -> Result<crate::mount::VirtualDentry> {
        let at = self.at.ok_or(Errno::EINVAL)?;
        let ctx = crate::pathops::PathCtx {
            cred: self.cred,
            root: at.root,
            umask: 0,
        };
        self.vfs.lookup(&ctx, at.cwd, path, true, false)
    }
}

/// A new filesystem instance: its operations and its root inode.
pub struct NewFilesystem {
    /// The superblock operations.
    pub ops: Arc<dyn FilesystemOps>,
    /// The root directory.
    pub root: Arc<dyn Inode>,
}

/// A filesystem type (`struct file_system_type`).
pub trait FilesystemType: Send + Sync + 'static {
    /// The name `mount(2)` uses (`tmpfs`).
    fn name(&self) -> &str;

    /// What the type allows.
    fn options(&self) -> FsTypeOptions;

    /// Builds a new instance. Unknown options must fail with `EINVAL`:
    /// use [`MountData::finish`].
    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem>;
}

/// The registry of filesystem types.
#[derive(Default)]
pub struct FsTypeRegistry {
    types: RwLock<HashMap<String, Arc<dyn FilesystemType>>>,
    order: RwLock<Vec<String>>,
}

impl FsTypeRegistry {
    /// Registers a type; a second type with the same name is refused (`EBUSY`, as `register_filesystem`).
    pub fn register(&self, t: Arc<dyn FilesystemType>) -> Result<()> {
        let name = t.name().to_string();
        let mut types = self.types.write();
        if types.contains_key(&name) {
            return Err(Errno::EBUSY);
        }
        types.insert(name.clone(), t);
        self.order.write().push(name);
        Ok(())
    }

    /// Finds a type by name. A name with a `.` is looked up by its prefix
    /// (`fuse.sshfs` → `fuse`). Unknown → `ENODEV`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn FilesystemType>> {
        let types = self.types.read();
        if let Some(t) = types.get(name) {
            return Ok(t.clone());
        }
        if let Some((prefix, _)) = name.split_once('.') {
            if let Some(t) = types.get(prefix) {
                return Ok(t.clone());
            }
        }
        Err(Errno::ENODEV)
    }

    /// The text of `/proc/filesystems`: one line per listed type,
    /// `nodev\t<name>` or `\t<name>`, in registration order.
    pub fn proc_filesystems(&self) -> String {
        let types = self.types.read();
        let mut out = String::new();
        for name in self.order.read().iter() {
            if let Some(t) = types.get(name) {
                let o = t.options();
                if o.allow_user_list {
                    out.push_str(if o.nodev { "nodev" } else { "" });
                    out.push('\t');
                    out.push_str(name);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The data argument of `mount(2)`, parsed into `key[=value]` options.
/// Filesystems take the options they know; [`MountData::finish`] fails with
/// `EINVAL` if any are left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountData {
    opts: Vec<(String, Option<String>)>,
}

impl MountData {
    /// Parses comma-separated options. Empty items are skipped; a NUL or a
    /// non-UTF-8 byte is `EINVAL`.
    pub fn parse(data: &[u8]) -> Result<MountData> {
        let text = std::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        if text.contains('\0') {
            return Err(Errno::EINVAL);
        }
        let mut opts = Vec::new();
        for item in text.split(',') {
            // An empty item, or one with an empty key (`=x`), is skipped
            // (`vfs_parse_monolithic_sep`).
            if item.is_empty() || item.starts_with('=') {
                continue;
            }
            match item.split_once('=') {
                Some((k, v)) => opts.push((k.to_string(), Some(v.to_string()))),
                None => opts.push((item.to_string(), None)),
            }
        }
        Ok(MountData { opts })
    }

    /// Removes and returns the last value given for `key` (later options win).
    /// `Some(None)` means the key was given without a value.
    pub fn take(&mut self, key: &str) -> Option<Option<String>> {
        let mut found = None;
        self.opts.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }

    /// Joins each option that starts with a digit to the one before it, as
    /// the comma that split them belonged to a value (tmpfs's
    /// `shmem_parse_options`: an `mpol=` node list holds commas).
    pub fn join_digit_items(&mut self) {
        let mut out: Vec<(String, Option<String>)> = Vec::with_capacity(self.opts.len());
        for (k, v) in std::mem::take(&mut self.opts) {
            if let (true, Some(prev)) =
                (k.starts_with(|c: char| c.is_ascii_digit()), out.last_mut())
            {
                let text = match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                };
                let into = prev.1.as_mut().unwrap_or(&mut prev.0);
                into.push(',');
                into.push_str(&text);
                continue;
            }
            out.push((k, v));
        }
        self.opts = out;
    }

    /// Removes every option named in `keys` and returns them in the order
    /// given, for options that set one thing under several names (the
    /// later one wins, but each must be valid).
    pub fn take_each(&mut self, keys: &[&str]) -> Vec<(String, Option<String>)> {
        let mut taken = Vec::new();
        self.opts.retain(|(k, v)| {
            let hit = keys.contains(&k.as_str());
            if hit {
                taken.push((k.clone(), v.clone()));
            }
            !hit
        });
        taken
    }

    /// Takes the options every filesystem shares, which set superblock
    /// flags whatever their value (`vfs_parse_sb_flag`): `ro` and `rw`,
    /// answered as whether the last one asked for read-only; `sync`,
    /// `async`, `dirsync`, `lazytime`, `nolazytime`, `mand` and `nomand`,
    /// which change nothing here. Mount-flag names (`bind`, `noatime`, …)
    /// are `EINVAL`, and so is `dirsync` on a remount, which cannot change it.
    pub fn take_sb_flags(&mut self, remount: bool) -> Result<Option<bool>> {
        const FORBIDDEN: [&str; 11] = [
            "bind",
            "move",
            "private",
            "remount",
            "shared",
            "slave",
            "unbindable",
            "rec",
            "noatime",
            "relatime",
            "norelatime",
        ];
        const IGNORED: [&str; 6] = ["sync", "async", "lazytime", "nolazytime", "mand", "nomand"];
        let mut ro = None;
        let mut bad = false;
        self.opts.retain(|(k, _)| match k.as_str() {
            "ro" => {
                ro = Some(true);
                false
            }
            "rw" => {
                ro = Some(false);
                false
            }
            "dirsync" => {
                bad |= remount;
                false
            }
            k if IGNORED.contains(&k) => false,
            k => {
                bad |= FORBIDDEN.contains(&k);
                true
            }
        });
        if bad {
            return Err(Errno::EINVAL);
        }
        Ok(ro)
    }

    /// Removes `key` and returns its value, which must be present (`EINVAL` if given bare).
    pub fn take_value(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(None) => Err(Errno::EINVAL),
            Some(Some(v)) => Ok(Some(v)),
        }
    }

    /// Removes `key` and parses its value as a number (decimal, `0` octal, `0x` hex).
    pub fn take_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.take_value(key)? {
            None => Ok(None),
            Some(v) => parse_number(&v).map(Some).ok_or(Errno::EINVAL),
        }
    }

    /// Removes a flag option given without a value; `key=value` is `EINVAL`.
    pub fn take_flag(&mut self, key: &str) -> Result<bool> {
        match self.take(key) {
            None => Ok(false),
            Some(None) => Ok(true),
            Some(Some(_)) => Err(Errno::EINVAL),
        }
    }

    /// Whether no options are left.
    pub fn is_empty(&self) -> bool {
        self.opts.is_empty()
    }

    /// Fails with `EINVAL` when an option nobody took remains.
    pub fn finish(&self) -> Result<()> {
        match self.opts.first() {
            None => Ok(()),
            Some((k, _)) => {
                log::debug!("unknown mount option {k}");
                Err(Errno::EINVAL)
            }
        }
    }
}

/// Parses a number as the kernel's option parser does: decimal, octal with a
/// leading `0`, hex with `0x`.
pub fn parse_number(s: &str) -> Option<u64> {
    kstrtoull(s, 0)
}

/// Linux's `kstrtoull`: an optional `+`, then digits in `base` (0: `0x`
/// hex, a leading `0` octal, else decimal; 16 takes a `0x` prefix), one
/// optional trailing newline and nothing else. Overflow is an error.
pub fn kstrtoull(s: &str, base: u32) -> Option<u64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    let b = s.as_bytes();
    let hex_prefix = matches!(b, [b'0', b'x' | b'X', ..]);
    let (radix, start) = match base {
        0 if hex_prefix && b.get(2).is_some_and(u8::is_ascii_hexdigit) => (16, 2),
        0 if b.first() == Some(&b'0') => (8, 0),
        0 => (10, 0),
        16 if hex_prefix => (16, 2),
        r @ 2..=36 => (r, 0),
        _ => return None,
    };
    let digits = &s[start..];
    let end = digits
        .bytes()
        .position(|c| !(c as char).is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 || !matches!(&digits[end..], "" | "\n") {
        return None;
    }
    u64::from_str_radix(&digits[..end], radix).ok()
}

/// Linux's `memparse`: a number as `simple_strtoull` reads it (`0x` hex,
/// a leading `0` octal, else decimal; no sign; wrapping on overflow; it
/// stops at the first byte that is not a digit), then an optional suffix
/// `k`, `m`, `g`, `t`, `p` or `e` (powers of 1024, shifted out on
/// overflow). Returns the value and the bytes after what was read.
pub fn memparse(s: &str) -> (u64, &str) {
    let b = s.as_bytes();
    let (radix, mut i) = match b {
        [b'0', b'x' | b'X', c, ..] if c.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let mut v: u64 = 0;
    while let Some(d) = b.get(i).and_then(|&c| (c as char).to_digit(radix)) {
        v = v.wrapping_mul(u64::from(radix)).wrapping_add(u64::from(d));
        i += 1;
    }
    let shift = match b.get(i).map(u8::to_ascii_lowercase) {
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(b'p') => 50,
        Some(b'e') => 60,
        _ => return (v, &s[i..]),
    };
    (v << shift, &s[i + 1..])
}

/// A size option's value: [`memparse`] reading all of a non-empty string
/// (an empty value is refused before the filesystem sees it).
pub fn parse_size(s: &str) -> Option<u64> {
    match memparse(s) {
        (v, "") if !s.is_empty() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_unknown_is_einval() {
        let mut d = MountData::parse(b"size=64k,mode=0700,,ro,size=1m").unwrap();
        assert_eq!(d.take_value("size").unwrap(), Some("1m".to_string()));
        assert_eq!(d.take_u64("mode").unwrap(), Some(0o700));
        assert!(d.finish().is_err());
        assert!(d.take_flag("ro").unwrap());
        assert!(d.finish().is_ok());
        assert!(MountData::parse(b"a\xff").is_err());
        let mut bare = MountData::parse(b"size").unwrap();
        assert_eq!(bare.take_value("size"), Err(Errno::EINVAL));
    }

    #[test]
    fn numbers_and_sizes() {
        assert_eq!(parse_number("0755"), Some(0o755));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("12a"), None);
        assert_eq!(parse_number("+5"), Some(5));
        assert_eq!(parse_number("5\n"), Some(5));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("08"), None);
        assert_eq!(parse_number("18446744073709551616"), None);
        assert_eq!(kstrtoull("0x1f", 16), Some(31));
        assert_eq!(kstrtoull("0x1f", 8), None);
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        // As memparse: no digits is 0, overflow wraps, no sign.
        assert_eq!(parse_size("k"), Some(0));
        assert_eq!(
            parse_size("99999999999999999999"),
            Some(7_766_279_631_452_241_919)
        );
        assert_eq!(parse_size("0x1k"), Some(1024));
        assert_eq!(parse_size("010"), Some(8));
        assert_eq!(parse_size("08"), None);
        assert_eq!(parse_size("+1"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(memparse("3e%"), (3 << 60, "%"));
    }
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    struct T(&'static str, bool);

    impl FilesystemType for T {
        fn name(&self) -> &str {
            self.0
        }
        fn options(&self) -> FsTypeOptions {
            FsTypeOptions {
                allow_user_mount: true,
                allow_user_list: self.1,
                nodev: true,
            }
        }
        fn mount(&self, _req: &MountRequest<'_>) -> Result<NewFilesystem> {
            Err(Errno::ENODEV)
        }
    }

    #[test]
    fn names_are_unique_and_listed() {
        let r = FsTypeRegistry::default();
        r.register(Arc::new(T("tmpfs", true))).unwrap();
        r.register(Arc::new(T("hidden", false))).unwrap();
        r.register(Arc::new(T("fuse", true))).unwrap();
        assert_eq!(r.register(Arc::new(T("tmpfs", true))), Err(Errno::EBUSY));
        assert_eq!(r.proc_filesystems(), "nodev\ttmpfs\nnodev\tfuse\n");
        assert_eq!(
            r.get("fuse.sshfs").map(|t| t.name().to_string()),
            Ok("fuse".to_string())
        );
        assert_eq!(r.get("nosuch").err(), Some(Errno::ENODEV));
    }
}
