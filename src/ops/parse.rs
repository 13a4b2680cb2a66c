//! The lexer and parser of the ops-script language (`shared/spec/ops-script.md`).
//!
//! A script is parsed whole before anything runs, so that a lexical or
//! syntactic error (unknown operation, wrong argument count, unknown flag name,
//! bad number, NUL byte in a path) stops the script before its first line runs.
//! Handle names are only checked for shape here: whether a handle is bound is
//! a property of the running script, so [`super::run`] reports that error when
//! the line runs.
//!
//! The parser works on bytes, never on `str`: paths and names in scripts are
//! arbitrary byte strings, and any input, however malformed, yields either a
//! [`Script`] or a [`ScriptError`], never a panic.

use std::fmt;

/// `AT_FDCWD`, the directory argument that means "the working directory".
pub const AT_FDCWD: i32 = -100;

/// A script error: the line it was found on (counting every line from 1) and
/// a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// The line number, counting every line of the file (comments and blank
    /// lines included) from 1.
    pub line: usize,
    /// Why the line is not a valid operation (free text).
    pub reason: String,
}

impl fmt::Display for ScriptError {
    /// Prints `error: line N: reason`, the exact text the runner writes to
    /// standard error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ScriptError {}

/// A handle name (`[a-z][a-z0-9_]*`) standing for an open file descriptor.
pub type Handle = String;

/// A DIR argument: the working directory or an open handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dir {
    /// `AT_FDCWD`.
    Cwd,
    /// A handle, looked up when the line runs.
    Handle(Handle),
}

/// One operation of a script, with its arguments decoded to the raw Linux
/// values that the [`super::backend::Backend`] takes.
///
/// Operations that are plain shorthands of an `*at` call are decoded to that
/// call (`stat` is `fstatat` with flags 0, `rmdir` is `unlinkat` with
/// `AT_REMOVEDIR`, `open` is `openat` on `AT_FDCWD`): Linux runs the same code
/// for both, and the echoed input line keeps the spelling the script used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `mkdir`, `mkdirat`.
    Mkdirat {
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// Mode (before the umask).
        mode: u32,
    },
    /// `mknod PATH MODE [MAJOR MINOR]`.
    Mknod {
        /// Path.
        path: Vec<u8>,
        /// Type and permission bits.
        mode: u32,
        /// Device major number (0 when absent).
        major: u32,
        /// Device minor number (0 when absent).
        minor: u32,
    },
    /// `symlink TARGET PATH`.
    Symlink {
        /// The link's contents.
        target: Vec<u8>,
        /// Where the link is made.
        path: Vec<u8>,
    },
    /// `link`, `linkat`.
    Linkat {
        /// Directory of the old path.
        olddir: Dir,
        /// Existing path.
        old: Vec<u8>,
        /// Directory of the new path.
        newdir: Dir,
        /// New path.
        new: Vec<u8>,
        /// `AT_*` flags.
        flags: u32,
    },
    /// `unlink`, `rmdir`, `unlinkat`.
    Unlinkat {
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// `AT_REMOVEDIR` or 0.
        flags: u32,
    },
    /// `rename`, `renameat2`.
    Renameat2 {
        /// Directory of the old path.
        olddir: Dir,
        /// Old path.
        old: Vec<u8>,
        /// Directory of the new path.
        newdir: Dir,
        /// New path.
        new: Vec<u8>,
        /// `RENAME_*` flags.
        flags: u32,
    },
    /// `readlink PATH`.
    Readlink {
        /// Path.
        path: Vec<u8>,
    },
    /// `stat`, `lstat`, `fstatat`.
    Fstatat {
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// `AT_*` flags.
        flags: u32,
    },
    /// `fstat HANDLE`.
    Fstat {
        /// The file.
        handle: Handle,
    },
    /// `access`, `faccessat2`.
    Faccessat2 {
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// `F_OK`/`R_OK`/`W_OK`/`X_OK` bits.
        mode: u32,
        /// `AT_*` flags.
        flags: u32,
    },
    /// `chmod PATH MODE`.
    Chmod {
        /// Path.
        path: Vec<u8>,
        /// New mode.
        mode: u32,
    },
    /// `fchmod HANDLE MODE`.
    Fchmod {
        /// The file.
        handle: Handle,
        /// New mode.
        mode: u32,
    },
    /// `chown`, `lchown`.
    Fchownat {
        /// Path.
        path: Vec<u8>,
        /// New owner (`u32::MAX` for -1: unchanged).
        uid: u32,
        /// New group (`u32::MAX` for -1: unchanged).
        gid: u32,
        /// 0 or `AT_SYMLINK_NOFOLLOW`.
        flags: u32,
    },
    /// `fchown HANDLE UID GID`.
    Fchown {
        /// The file.
        handle: Handle,
        /// New owner (`u32::MAX` for -1).
        uid: u32,
        /// New group (`u32::MAX` for -1).
        gid: u32,
    },
    /// `truncate PATH LENGTH`.
    Truncate {
        /// Path.
        path: Vec<u8>,
        /// New length.
        length: i64,
    },
    /// `ftruncate HANDLE LENGTH`.
    Ftruncate {
        /// The file.
        handle: Handle,
        /// New length.
        length: i64,
    },
    /// `open`, `openat`.
    Openat {
        /// The handle to bind on success.
        handle: Handle,
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// `O_*` flags.
        flags: u32,
        /// Mode for a created file (0 unless `O_CREAT` or `O_TMPFILE`).
        mode: u32,
    },
    /// `openat2 HANDLE DIR PATH FLAGS MODE RESOLVE`.
    Openat2 {
        /// The handle to bind on success.
        handle: Handle,
        /// Directory the path is relative to.
        dir: Dir,
        /// Path.
        path: Vec<u8>,
        /// `O_*` flags (`open_how.flags`).
        flags: u64,
        /// `open_how.mode`.
        mode: u64,
        /// `RESOLVE_*` flags.
        resolve: u64,
    },
    /// `close HANDLE`.
    Close {
        /// The handle to close and unbind.
        handle: Handle,
    },
    /// `dup HANDLE NEWHANDLE`.
    Dup {
        /// The handle to duplicate.
        handle: Handle,
        /// The handle bound to the copy on success.
        new: Handle,
    },
    /// `read HANDLE COUNT`.
    Read {
        /// The file.
        handle: Handle,
        /// Bytes asked for.
        count: u64,
    },
    /// `pread HANDLE COUNT OFFSET`.
    Pread {
        /// The file.
        handle: Handle,
        /// Bytes asked for.
        count: u64,
        /// File offset.
        offset: i64,
    },
    /// `write HANDLE DATA`.
    Write {
        /// The file.
        handle: Handle,
        /// Bytes to write.
        data: Vec<u8>,
    },
    /// `pwrite HANDLE DATA OFFSET`.
    Pwrite {
        /// The file.
        handle: Handle,
        /// Bytes to write.
        data: Vec<u8>,
        /// File offset.
        offset: i64,
    },
    /// `lseek HANDLE OFFSET WHENCE`.
    Lseek {
        /// The file.
        handle: Handle,
        /// Offset (may be negative).
        offset: i64,
        /// `SEEK_*` value.
        whence: i32,
    },
    /// `fsync HANDLE`.
    Fsync {
        /// The file.
        handle: Handle,
    },
    /// `getdents HANDLE`.
    Getdents {
        /// The directory.
        handle: Handle,
    },
    /// `ls PATH`.
    Ls {
        /// The directory.
        path: Vec<u8>,
    },
    /// `chdir PATH`.
    Chdir {
        /// Path.
        path: Vec<u8>,
    },
    /// `fchdir HANDLE`.
    Fchdir {
        /// The directory.
        handle: Handle,
    },
    /// `chroot PATH`.
    Chroot {
        /// Path.
        path: Vec<u8>,
    },
    /// `getcwd`.
    Getcwd,
    /// `umask MODE`.
    Umask {
        /// The new mask.
        mask: u32,
    },
    /// `as UID GID [GROUPS]`.
    As {
        /// Filesystem uid.
        uid: u32,
        /// Filesystem gid.
        gid: u32,
        /// Supplementary groups.
        groups: Vec<u32>,
    },
    /// `setxattr`, `lsetxattr`.
    Setxattr {
        /// Path.
        path: Vec<u8>,
        /// Attribute name.
        name: Vec<u8>,
        /// Attribute value.
        value: Vec<u8>,
        /// `XATTR_*` flags.
        flags: u32,
        /// Whether a final symlink is followed (`setxattr`) or not (`lsetxattr`).
        follow: bool,
    },
    /// `getxattr`, `lgetxattr`.
    Getxattr {
        /// Path.
        path: Vec<u8>,
        /// Attribute name.
        name: Vec<u8>,
        /// Whether a final symlink is followed.
        follow: bool,
    },
    /// `listxattr`, `llistxattr`.
    Listxattr {
        /// Path.
        path: Vec<u8>,
        /// Whether a final symlink is followed.
        follow: bool,
    },
    /// `removexattr`, `lremovexattr`.
    Removexattr {
        /// Path.
        path: Vec<u8>,
        /// Attribute name.
        name: Vec<u8>,
        /// Whether a final symlink is followed.
        follow: bool,
    },
    /// `mount SOURCE TARGET FSTYPE FLAGS DATA`.
    Mount {
        /// Source, passed as is.
        source: Vec<u8>,
        /// Mount point.
        target: Vec<u8>,
        /// Filesystem type name.
        fstype: Vec<u8>,
        /// `MS_*` flags.
        flags: u64,
        /// Filesystem data (`""` for none).
        data: Vec<u8>,
    },
    /// `umount TARGET FLAGS`.
    Umount {
        /// Mount point.
        target: Vec<u8>,
        /// `MNT_*`/`UMOUNT_*` flags.
        flags: u32,
    },
    /// `pivot_root NEW PUT_OLD`.
    PivotRoot {
        /// The new root.
        new_root: Vec<u8>,
        /// Where the old root goes.
        put_old: Vec<u8>,
    },
    /// `mounts`.
    Mounts,
}

/// One operation line of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line number (from 1, counting every line).
    pub number: usize,
    /// The input line with leading and trailing white space removed: the
    /// runner echoes it before ` => `.
    pub text: Vec<u8>,
    /// The decoded operation.
    pub op: Op,
}

/// A parsed script: its operation lines in order (comments and blank lines
/// are dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// The operation lines.
    pub lines: Vec<Line>,
}

/// Parses a whole script. The first error found (in line order) is returned.
///
/// # Errors
///
/// A [`ScriptError`] for the first line that is not a valid operation.
pub fn parse_script(src: &[u8]) -> Result<Script, ScriptError> {
    let mut lines = Vec::new();
    for (idx, raw) in src.split(|&b| b == b'\n').enumerate() {
        let number = idx + 1;
        let text = trim(raw);
        if text.is_empty() || text[0] == b'#' {
            continue;
        }
        let op = parse_line(text).map_err(|reason| ScriptError {
            line: number,
            reason,
        })?;
        lines.push(Line {
            number,
            text: text.to_vec(),
            op,
        });
    }
    Ok(Script { lines })
}

/// Bytes that count as white space around a line. `\r` is included so that a
/// script saved with CRLF line ends runs as written.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_space(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_space(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// A token: its bytes, and whether it was written as a quoted string (a quoted
/// token is never a number, a flag set or a handle).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    bytes: Vec<u8>,
    quoted: bool,
}

/// Splits a trimmed line into tokens, decoding quoted strings.
fn tokenize(line: &[u8]) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == b' ' || b == b'\t' {
            i += 1;
            continue;
        }
        if b == b'"' {
            let mut bytes = Vec::new();
            i += 1;
            loop {
                let Some(&c) = line.get(i) else {
                    return Err("unterminated quoted string".to_string());
                };
                i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let Some(&e) = line.get(i) else {
                            return Err("unterminated quoted string".to_string());
                        };
                        i += 1;
                        match e {
                            b'\\' => bytes.push(b'\\'),
                            b'"' => bytes.push(b'"'),
                            b'n' => bytes.push(b'\n'),
                            b't' => bytes.push(b'\t'),
                            b'0' => bytes.push(0),
                            b'x' => {
                                let hi = line.get(i).copied().and_then(hex_digit);
                                let lo = line.get(i + 1).copied().and_then(hex_digit);
                                match (hi, lo) {
                                    (Some(hi), Some(lo)) => bytes.push(hi << 4 | lo),
                                    _ => {
                                        return Err(
                                            "bad \\x escape: two hex digits expected".to_string()
                                        )
                                    }
                                }
                                i += 2;
                            }
                            other => return Err(format!("bad escape \\{}", show_byte(other))),
                        }
                    }
                    c => bytes.push(c),
                }
            }
            if let Some(&next) = line.get(i) {
                if next != b' ' && next != b'\t' {
                    return Err("a quoted string must be followed by a space".to_string());
                }
            }
            tokens.push(Token {
                bytes,
                quoted: true,
            });
        } else {
            let start = i;
            while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
                i += 1;
            }
            tokens.push(Token {
                bytes: line[start..i].to_vec(),
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A byte as it may appear in an error message.
fn show_byte(b: u8) -> String {
    if (0x21..0x7f).contains(&b) {
        (b as char).to_string()
    } else {
        format!("\\x{b:02x}")
    }
}

/// A token as it may appear in an error message: printable ASCII as is,
/// anything else escaped, so that the message stays one line of text.
fn show(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// Flag names by category, with their Linux (x86_64) values.
mod names {
    pub(super) const OPEN: &[(&str, u64)] = &[
        ("O_RDONLY", 0),
        ("O_WRONLY", 0o1),
        ("O_RDWR", 0o2),
        ("O_CREAT", 0o100),
        ("O_EXCL", 0o200),
        ("O_NOCTTY", 0o400),
        ("O_TRUNC", 0o1000),
        ("O_APPEND", 0o2000),
        ("O_NONBLOCK", 0o4000),
        ("O_DSYNC", 0o10000),
        ("O_SYNC", 0o4010000),
        ("O_DIRECTORY", 0o200000),
        ("O_NOFOLLOW", 0o400000),
        ("O_NOATIME", 0o1000000),
        ("O_CLOEXEC", 0o2000000),
        ("O_PATH", 0o10000000),
        // glibc's O_TMPFILE carries O_DIRECTORY with it.
        ("O_TMPFILE", 0o20200000),
    ];
    pub(super) const AT: &[(&str, u64)] = &[
        ("AT_SYMLINK_NOFOLLOW", 0x100),
        ("AT_REMOVEDIR", 0x200),
        ("AT_EACCESS", 0x200),
        ("AT_SYMLINK_FOLLOW", 0x400),
        ("AT_NO_AUTOMOUNT", 0x800),
        ("AT_EMPTY_PATH", 0x1000),
    ];
    pub(super) const RESOLVE: &[(&str, u64)] = &[
        ("RESOLVE_NO_XDEV", 0x01),
        ("RESOLVE_NO_MAGICLINKS", 0x02),
        ("RESOLVE_NO_SYMLINKS", 0x04),
        ("RESOLVE_BENEATH", 0x08),
        ("RESOLVE_IN_ROOT", 0x10),
        ("RESOLVE_CACHED", 0x20),
    ];
    pub(super) const RENAME: &[(&str, u64)] = &[
        ("RENAME_NOREPLACE", 1),
        ("RENAME_EXCHANGE", 2),
        ("RENAME_WHITEOUT", 4),
    ];
    pub(super) const ACCESS: &[(&str, u64)] = &[("F_OK", 0), ("X_OK", 1), ("W_OK", 2), ("R_OK", 4)];
    pub(super) const WHENCE: &[(&str, u64)] = &[
        ("SEEK_SET", 0),
        ("SEEK_CUR", 1),
        ("SEEK_END", 2),
        ("SEEK_DATA", 3),
        ("SEEK_HOLE", 4),
    ];
    pub(super) const XATTR: &[(&str, u64)] = &[("XATTR_CREATE", 1), ("XATTR_REPLACE", 2)];
    pub(super) const MOUNT: &[(&str, u64)] = &[
        ("MS_RDONLY", 1),
        ("MS_NOSUID", 2),
        ("MS_NODEV", 4),
        ("MS_NOEXEC", 8),
        ("MS_SYNCHRONOUS", 16),
        ("MS_REMOUNT", 32),
        ("MS_MANDLOCK", 64),
        ("MS_DIRSYNC", 128),
        ("MS_NOSYMFOLLOW", 256),
        ("MS_NOATIME", 1024),
        ("MS_NODIRATIME", 2048),
        ("MS_BIND", 4096),
        ("MS_MOVE", 8192),
        ("MS_REC", 16384),
        ("MS_SILENT", 32768),
        ("MS_UNBINDABLE", 1 << 17),
        ("MS_PRIVATE", 1 << 18),
        ("MS_SLAVE", 1 << 19),
        ("MS_SHARED", 1 << 20),
        ("MS_RELATIME", 1 << 21),
        ("MS_STRICTATIME", 1 << 24),
        ("MS_LAZYTIME", 1 << 25),
    ];
    pub(super) const UMOUNT: &[(&str, u64)] = &[
        ("MNT_FORCE", 1),
        ("MNT_DETACH", 2),
        ("MNT_EXPIRE", 4),
        ("UMOUNT_NOFOLLOW", 8),
    ];
    pub(super) const MODE: &[(&str, u64)] = &[
        ("S_IFREG", 0o100000),
        ("S_IFDIR", 0o040000),
        ("S_IFLNK", 0o120000),
        ("S_IFCHR", 0o020000),
        ("S_IFBLK", 0o060000),
        ("S_IFIFO", 0o010000),
        ("S_IFSOCK", 0o140000),
        ("S_ISUID", 0o4000),
        ("S_ISGID", 0o2000),
        ("S_ISVTX", 0o1000),
    ];
}

/// Parses an unsigned number: decimal, octal with a leading `0`, or hex with
/// `0x`. `None` for anything else, overflow included.
fn parse_unsigned(s: &[u8]) -> Option<u64> {
    let (digits, radix) = if let Some(hex) = s.strip_prefix(b"0x").or_else(|| s.strip_prefix(b"0X"))
    {
        (hex, 16)
    } else if s.len() > 1 && s[0] == b'0' {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        let v = u64::from(hex_digit(d)?);
        if v >= radix {
            return None;
        }
        value = value.checked_mul(radix)?.checked_add(v)?;
    }
    Some(value)
}

/// Parses a number that may be a negative decimal.
fn parse_signed(s: &[u8]) -> Option<i64> {
    if let Some(rest) = s.strip_prefix(b"-") {
        if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = parse_unsigned(rest)?;
        // Decimal only after a minus sign: "-010" is not octal, and not allowed.
        if rest.len() > 1 && rest[0] == b'0' {
            return None;
        }
        if v == 1 << 63 {
            return Some(i64::MIN);
        }
        i64::try_from(v).ok().map(|v| -v)
    } else {
        i64::try_from(parse_unsigned(s)?).ok()
    }
}

/// The arguments of one line, consumed left to right.
struct Args {
    tokens: std::vec::IntoIter<Token>,
}

impl Args {
    fn next(&mut self) -> Token {
        // The argument count is checked before any argument is taken.
        self.tokens.next().unwrap_or(Token {
            bytes: Vec::new(),
            quoted: false,
        })
    }

    fn bare(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let t = self.next();
        if t.quoted {
            return Err(format!("{what} must not be quoted: \"{}\"", show(&t.bytes)));
        }
        Ok(t.bytes)
    }

    /// A path, name or mount argument: any bytes but NUL.
    fn path(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let t = self.next();
        if t.bytes.contains(&0) {
            return Err(format!("NUL byte in {what}"));
        }
        Ok(t.bytes)
    }

    /// A data argument: any bytes.
    fn data(&mut self) -> Vec<u8> {
        self.next().bytes
    }

    fn handle(&mut self) -> Result<Handle, String> {
        let t = self.bare("a handle")?;
        if !is_handle_name(&t) {
            return Err(format!("bad handle name {}", show(&t)));
        }
        Ok(String::from_utf8_lossy(&t).into_owned())
    }

    fn dir(&mut self) -> Result<Dir, String> {
        let t = self.bare("a directory handle")?;
        if t == b"AT_FDCWD" {
            return Ok(Dir::Cwd);
        }
        if !is_handle_name(&t) {
            return Err(format!("bad directory {} (a handle or AT_FDCWD)", show(&t)));
        }
        Ok(Dir::Handle(String::from_utf8_lossy(&t).into_owned()))
    }

    fn unsigned(&mut self, max: u64) -> Result<u64, String> {
        let t = self.bare("a number")?;
        match parse_unsigned(&t) {
            Some(v) if v <= max => Ok(v),
            _ => Err(format!("bad number {}", show(&t))),
        }
    }

    /// A non-negative number that fits an `off_t`.
    fn offset(&mut self) -> Result<i64, String> {
        // i64::MAX always fits in i64.
        self.unsigned(i64::MAX as u64).map(|v| v as i64)
    }

    fn signed(&mut self) -> Result<i64, String> {
        let t = self.bare("a number")?;
        parse_signed(&t).ok_or_else(|| format!("bad number {}", show(&t)))
    }

    /// A uid or gid: a number that fits `u32`, or `-1` (unchanged).
    fn id(&mut self) -> Result<u32, String> {
        let t = self.bare("an id")?;
        if t == b"-1" {
            return Ok(u32::MAX);
        }
        match parse_unsigned(&t) {
            Some(v) if v < u64::from(u32::MAX) => Ok(v as u32),
            _ => Err(format!("bad number {}", show(&t))),
        }
    }

    /// A FLAGS (or MODE) token: numbers and names of `table` joined by `|`.
    fn flags(&mut self, table: &[(&str, u64)], max: u64) -> Result<u64, String> {
        let t = self.bare("a flag set")?;
        let mut value = 0u64;
        for part in t.split(|&b| b == b'|') {
            let v = if part
                .first()
                .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
            {
                parse_unsigned(part).ok_or_else(|| format!("bad number {}", show(part)))?
            } else if part.is_empty() {
                return Err(format!("bad flags {}: empty name", show(&t)));
            } else {
                table
                    .iter()
                    .find(|(name, _)| name.as_bytes() == part)
                    .map(|&(_, v)| v)
                    .ok_or_else(|| format!("unknown flag name {}", show(part)))?
            };
            value |= v;
        }
        if value > max {
            return Err(format!("bad number {}: out of range", show(&t)));
        }
        Ok(value)
    }

    fn flags32(&mut self, table: &[(&str, u64)]) -> Result<u32, String> {
        // flags() bounds the value by the max it is given.
        self.flags(table, u64::from(u32::MAX)).map(|v| v as u32)
    }

    fn mode(&mut self) -> Result<u32, String> {
        self.flags32(names::MODE)
    }
}

fn is_handle_name(t: &[u8]) -> bool {
    matches!(t.first(), Some(b'a'..=b'z'))
        && t.iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// The number of arguments each operation takes, as an inclusive range.
fn arity(op: &str) -> Option<(usize, usize)> {
    Some(match op {
        "getcwd" | "mounts" => (0, 0),
        "unlink" | "rmdir" | "readlink" | "stat" | "lstat" | "fstat" | "close" | "fsync"
        | "getdents" | "ls" | "chdir" | "fchdir" | "chroot" | "umask" | "listxattr"
        | "llistxattr" => (1, 1),
        "mkdir" | "symlink" | "link" | "rename" | "access" | "chmod" | "fchmod" | "truncate"
        | "ftruncate" | "dup" | "read" | "write" | "getxattr" | "lgetxattr" | "removexattr"
        | "lremovexattr" | "umount" | "pivot_root" => (2, 2),
        "mkdirat" | "unlinkat" | "fstatat" | "chown" | "lchown" | "fchown" | "pread" | "pwrite"
        | "lseek" => (3, 3),
        "faccessat2" | "setxattr" | "lsetxattr" => (4, 4),
        "linkat" | "renameat2" | "mount" => (5, 5),
        "openat2" => (6, 6),
        "mknod" => (2, 4),
        "open" => (3, 4),
        "openat" => (4, 5),
        "as" => (2, 3),
        _ => return None,
    })
}

/// `O_CREAT`, and the `__O_TMPFILE` bit: the flags with which open takes a MODE.
const O_CREAT: u64 = 0o100;
const O_TMPFILE_BIT: u64 = 0o20000000;
const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
const AT_REMOVEDIR: u32 = 0x200;

/// Parses one trimmed, non-comment line.
fn parse_line(line: &[u8]) -> Result<Op, String> {
    let mut tokens = tokenize(line)?;
    if tokens.is_empty() {
        return Err("empty line".to_string());
    }
    let first = tokens.remove(0);
    let name = if first.quoted {
        None
    } else {
        std::str::from_utf8(&first.bytes).ok()
    };
    let Some((op, (min, max))) = name.and_then(|n| arity(n).map(|a| (n, a))) else {
        return Err(format!("unknown operation {}", show(&first.bytes)));
    };
    let n = tokens.len();
    if n < min || n > max {
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "wrong number of arguments for {op}: expected {expected}, got {n}"
        ));
    }
    let mut a = Args {
        tokens: tokens.into_iter(),
    };
    let parsed = match op {
        "mkdir" => Op::Mkdirat {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            mode: a.mode()?,
        },
        "mkdirat" => Op::Mkdirat {
            dir: a.dir()?,
            path: a.path("a path")?,
            mode: a.mode()?,
        },
        "mknod" => {
            if n == 3 {
                return Err(
                    "wrong number of arguments for mknod: expected 2 or 4, got 3".to_string(),
                );
            }
            let path = a.path("a path")?;
            let mode = a.mode()?;
            let (major, minor) = if n == 4 {
                let ma = a.unsigned(u64::from(u32::MAX))? as u32;
                let mi = a.unsigned(u64::from(u32::MAX))? as u32;
                (ma, mi)
            } else {
                (0, 0)
            };
            Op::Mknod {
                path,
                mode,
                major,
                minor,
            }
        }
        "symlink" => Op::Symlink {
            target: a.path("a symlink target")?,
            path: a.path("a path")?,
        },
        "link" => Op::Linkat {
            olddir: Dir::Cwd,
            old: a.path("a path")?,
            newdir: Dir::Cwd,
            new: a.path("a path")?,
            flags: 0,
        },
        "linkat" => Op::Linkat {
            olddir: a.dir()?,
            old: a.path("a path")?,
            newdir: a.dir()?,
            new: a.path("a path")?,
            flags: a.flags32(names::AT)?,
        },
        "unlink" => Op::Unlinkat {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            flags: 0,
        },
        "rmdir" => Op::Unlinkat {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            flags: AT_REMOVEDIR,
        },
        "unlinkat" => Op::Unlinkat {
            dir: a.dir()?,
            path: a.path("a path")?,
            flags: a.flags32(names::AT)?,
        },
        "rename" => Op::Renameat2 {
            olddir: Dir::Cwd,
            old: a.path("a path")?,
            newdir: Dir::Cwd,
            new: a.path("a path")?,
            flags: 0,
        },
        "renameat2" => Op::Renameat2 {
            olddir: a.dir()?,
            old: a.path("a path")?,
            newdir: a.dir()?,
            new: a.path("a path")?,
            flags: a.flags32(names::RENAME)?,
        },
        "readlink" => Op::Readlink {
            path: a.path("a path")?,
        },
        "stat" => Op::Fstatat {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            flags: 0,
        },
        "lstat" => Op::Fstatat {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            flags: AT_SYMLINK_NOFOLLOW,
        },
        "fstatat" => Op::Fstatat {
            dir: a.dir()?,
            path: a.path("a path")?,
            flags: a.flags32(names::AT)?,
        },
        "fstat" => Op::Fstat {
            handle: a.handle()?,
        },
        "access" => Op::Faccessat2 {
            dir: Dir::Cwd,
            path: a.path("a path")?,
            mode: a.flags32(names::ACCESS)?,
            flags: 0,
        },
        "faccessat2" => Op::Faccessat2 {
            dir: a.dir()?,
            path: a.path("a path")?,
            mode: a.flags32(names::ACCESS)?,
            flags: a.flags32(names::AT)?,
        },
        "chmod" => Op::Chmod {
            path: a.path("a path")?,
            mode: a.mode()?,
        },
        "fchmod" => Op::Fchmod {
            handle: a.handle()?,
            mode: a.mode()?,
        },
        "chown" => Op::Fchownat {
            path: a.path("a path")?,
            uid: a.id()?,
            gid: a.id()?,
            flags: 0,
        },
        "lchown" => Op::Fchownat {
            path: a.path("a path")?,
            uid: a.id()?,
            gid: a.id()?,
            flags: AT_SYMLINK_NOFOLLOW,
        },
        "fchown" => Op::Fchown {
            handle: a.handle()?,
            uid: a.id()?,
            gid: a.id()?,
        },
        "truncate" => Op::Truncate {
            path: a.path("a path")?,
            length: a.offset()?,
        },
        "ftruncate" => Op::Ftruncate {
            handle: a.handle()?,
            length: a.offset()?,
        },
        "open" | "openat" => {
            let handle = a.handle()?;
            let dir = if op == "openat" { a.dir()? } else { Dir::Cwd };
            let path = a.path("a path")?;
            let flags = a.flags(names::OPEN, u64::from(u32::MAX))?;
            let takes_mode = flags & (O_CREAT | O_TMPFILE_BIT) != 0;
            let given = n == max;
            if takes_mode != given {
                return Err(if takes_mode {
                    format!("wrong number of arguments for {op}: MODE is required with O_CREAT or O_TMPFILE")
                } else {
                    format!("wrong number of arguments for {op}: MODE is taken only with O_CREAT or O_TMPFILE")
                });
            }
            let mode = if given { a.mode()? } else { 0 };
            // Bounded by u32::MAX above.
            Op::Openat {
                handle,
                dir,
                path,
                flags: flags as u32,
                mode,
            }
        }
        "openat2" => Op::Openat2 {
            handle: a.handle()?,
            dir: a.dir()?,
            path: a.path("a path")?,
            flags: a.flags(names::OPEN, u64::MAX)?,
            mode: a.flags(names::MODE, u64::MAX)?,
            resolve: a.flags(names::RESOLVE, u64::MAX)?,
        },
        "close" => Op::Close {
            handle: a.handle()?,
        },
        "dup" => Op::Dup {
            handle: a.handle()?,
            new: a.handle()?,
        },
        "read" => Op::Read {
            handle: a.handle()?,
            count: a.unsigned(u64::MAX)?,
        },
        "pread" => Op::Pread {
            handle: a.handle()?,
            count: a.unsigned(u64::MAX)?,
            offset: a.offset()?,
        },
        "write" => Op::Write {
            handle: a.handle()?,
            data: a.data(),
        },
        "pwrite" => Op::Pwrite {
            handle: a.handle()?,
            data: a.data(),
            offset: a.offset()?,
        },
        "lseek" => {
            let handle = a.handle()?;
            let offset = a.signed()?;
            let whence = a.flags(names::WHENCE, i32::MAX as u64)? as i32;
            Op::Lseek {
                handle,
                offset,
                whence,
            }
        }
        "fsync" => Op::Fsync {
            handle: a.handle()?,
        },
        "getdents" => Op::Getdents {
            handle: a.handle()?,
        },
        "ls" => Op::Ls {
            path: a.path("a path")?,
        },
        "chdir" => Op::Chdir {
            path: a.path("a path")?,
        },
        "fchdir" => Op::Fchdir {
            handle: a.handle()?,
        },
        "chroot" => Op::Chroot {
            path: a.path("a path")?,
        },
        "getcwd" => Op::Getcwd,
        "umask" => Op::Umask { mask: a.mode()? },
        "as" => {
            let uid = a.unsigned(u64::from(u32::MAX) - 1)? as u32;
            let gid = a.unsigned(u64::from(u32::MAX) - 1)? as u32;
            let mut groups = Vec::new();
            if n == 3 {
                let t = a.bare("a group list")?;
                for g in t.split(|&b| b == b',') {
                    match parse_unsigned(g) {
                        Some(v) if v < u64::from(u32::MAX) => groups.push(v as u32),
                        _ => return Err(format!("bad number {} in group list", show(g))),
                    }
                }
            }
            Op::As { uid, gid, groups }
        }
        "setxattr" | "lsetxattr" => Op::Setxattr {
            path: a.path("a path")?,
            name: a.path("an xattr name")?,
            value: a.data(),
            flags: a.flags32(names::XATTR)?,
            follow: op == "setxattr",
        },
        "getxattr" | "lgetxattr" => Op::Getxattr {
            path: a.path("a path")?,
            name: a.path("an xattr name")?,
            follow: op == "getxattr",
        },
        "listxattr" | "llistxattr" => Op::Listxattr {
            path: a.path("a path")?,
            follow: op == "listxattr",
        },
        "removexattr" | "lremovexattr" => Op::Removexattr {
            path: a.path("a path")?,
            name: a.path("an xattr name")?,
            follow: op == "removexattr",
        },
        "mount" => Op::Mount {
            source: a.path("a mount source")?,
            target: a.path("a mount target")?,
            fstype: a.path("a filesystem type")?,
            flags: a.flags(names::MOUNT, u64::MAX)?,
            data: a.path("mount data")?,
        },
        "umount" => Op::Umount {
            target: a.path("a mount target")?,
            flags: a.flags32(names::UMOUNT)?,
        },
        "pivot_root" => Op::PivotRoot {
            new_root: a.path("a path")?,
            put_old: a.path("a path")?,
        },
        "mounts" => Op::Mounts,
        other => return Err(format!("unknown operation {other}")),
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> ScriptError {
        parse_script(src.as_bytes()).expect_err("script error expected")
    }

    fn op(line: &str) -> Op {
        let s = parse_script(line.as_bytes()).expect("valid line");
        assert_eq!(s.lines.len(), 1);
        s.lines[0].op.clone()
    }

    #[test]
    fn the_two_script_errors_of_the_examples() {
        let e = err("# An unknown flag name is a script error; nothing runs.\nopen f /f O_RDWR|O_CREATE 0644\nmkdir /never 0755\n");
        assert_eq!(e.to_string(), "error: line 2: unknown flag name O_CREATE");
        // An unbound handle is not a parse error: it is found when the line runs.
        let s = parse_script(b"open f /f O_RDWR|O_CREAT 0644\nclose f\nwrite f \"x\"\n")
            .expect("parses");
        assert_eq!(s.lines.len(), 3);
    }

    #[test]
    fn lines_comments_and_echo_text() {
        let s = parse_script(b"\n  # comment\n\t mkdir /d 0755  \r\n\nmounts").expect("parses");
        assert_eq!(s.lines.len(), 2);
        assert_eq!(s.lines[0].number, 3);
        assert_eq!(s.lines[0].text, b"mkdir /d 0755".to_vec());
        assert_eq!(s.lines[1].number, 5);
        assert_eq!(s.lines[1].op, Op::Mounts);
    }

    #[test]
    fn every_example_script_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/spec/examples");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "ops") {
                let src = std::fs::read(e.path()).expect("readable");
                let s = parse_script(&src).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                assert!(!s.lines.is_empty());
            }
        }
    }

    #[test]
    fn quoted_strings_and_escapes() {
        assert_eq!(
            op(r#"write f "hi\tthere\n\x00\xff\"\\""#),
            Op::Write {
                handle: "f".into(),
                data: b"hi\tthere\n\x00\xff\"\\".to_vec()
            }
        );
        assert_eq!(
            op(r#"write f """#),
            Op::Write {
                handle: "f".into(),
                data: Vec::new()
            }
        );
        assert_eq!(
            op("write f a\"b"),
            Op::Write {
                handle: "f".into(),
                data: b"a\"b".to_vec()
            }
        );
        assert!(err(r#"write f "abc"#).reason.contains("unterminated"));
        assert!(err(r#"write f "\q""#).reason.contains("bad escape"));
        assert!(err(r#"write f "\x4""#).reason.contains("hex"));
        assert!(err(r#"write f "a"b"#)
            .reason
            .contains("followed by a space"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_unsigned(b"0755"), Some(0o755));
        assert_eq!(parse_unsigned(b"0"), Some(0));
        assert_eq!(parse_unsigned(b"0x1F"), Some(31));
        assert_eq!(parse_unsigned(b"42"), Some(42));
        assert_eq!(parse_unsigned(b"08"), None);
        assert_eq!(parse_unsigned(b"0x"), None);
        assert_eq!(parse_unsigned(b"12a"), None);
        assert_eq!(parse_unsigned(b"99999999999999999999999"), None);
        assert_eq!(parse_signed(b"-1"), Some(-1));
        assert_eq!(parse_signed(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_signed(b"-0x1"), None);
        assert_eq!(parse_signed(b"-"), None);
        assert_eq!(
            op("lseek f -3 SEEK_END"),
            Op::Lseek {
                handle: "f".into(),
                offset: -3,
                whence: 2
            }
        );
        assert_eq!(err("read f 0x").reason, "bad number 0x");
        assert_eq!(err("read f -1").reason, "bad number -1");
        assert_eq!(err("truncate /f -1").reason, "bad number -1");
    }

    #[test]
    fn flags_and_modes() {
        assert_eq!(
            op("open f /f O_RDWR|O_CREAT|O_EXCL 0644"),
            Op::Openat {
                handle: "f".into(),
                dir: Dir::Cwd,
                path: b"/f".to_vec(),
                flags: 0o302,
                mode: 0o644
            }
        );
        assert_eq!(
            op("mknod /c S_IFCHR|0604 1 7"),
            Op::Mknod {
                path: b"/c".to_vec(),
                mode: 0o020604,
                major: 1,
                minor: 7
            }
        );
        assert_eq!(
            op("open t /d O_RDWR|O_TMPFILE 0600"),
            Op::Openat {
                handle: "t".into(),
                dir: Dir::Cwd,
                path: b"/d".to_vec(),
                flags: 0o20200002,
                mode: 0o600
            }
        );
        assert_eq!(
            op("mount none /m tmpfs MS_NOSUID|MS_NODEV|MS_NOEXEC \"size=64k\""),
            Op::Mount {
                source: b"none".to_vec(),
                target: b"/m".to_vec(),
                fstype: b"tmpfs".to_vec(),
                flags: 14,
                data: b"size=64k".to_vec()
            }
        );
        assert_eq!(
            op("access /f W_OK|R_OK"),
            Op::Faccessat2 {
                dir: Dir::Cwd,
                path: b"/f".to_vec(),
                mode: 6,
                flags: 0
            }
        );
        assert_eq!(
            op("umount /m MNT_DETACH"),
            Op::Umount {
                target: b"/m".to_vec(),
                flags: 2
            }
        );
        assert_eq!(
            err("open f /f O_RDWR|O_CREAT S_IFFOO|0644").reason,
            "unknown flag name S_IFFOO"
        );
        // A name of another category is unknown here.
        assert_eq!(
            err("unlinkat AT_FDCWD /f O_RDWR").reason,
            "unknown flag name O_RDWR"
        );
        assert!(err("open f /f O_RDWR||O_CREAT 0644")
            .reason
            .contains("empty"));
        assert!(err("open f /f \"O_RDWR\"").reason.contains("quoted"));
    }

    #[test]
    fn open_takes_mode_only_with_creat_or_tmpfile() {
        assert!(err("open f /f O_RDWR|O_CREAT")
            .reason
            .contains("wrong number of arguments"));
        assert!(err("open f /f O_RDONLY 0644")
            .reason
            .contains("wrong number of arguments"));
        assert_eq!(
            op("openat f d x O_RDONLY"),
            Op::Openat {
                handle: "f".into(),
                dir: Dir::Handle("d".into()),
                path: b"x".to_vec(),
                flags: 0,
                mode: 0
            }
        );
    }

    #[test]
    fn arity_handles_and_nul_bytes() {
        assert_eq!(err("frobnicate /x").reason, "unknown operation frobnicate");
        assert!(err("mkdir /d")
            .reason
            .starts_with("wrong number of arguments for mkdir"));
        assert!(err("mknod /p S_IFIFO|0600 1")
            .reason
            .starts_with("wrong number of arguments"));
        assert!(err("getcwd now")
            .reason
            .starts_with("wrong number of arguments"));
        assert!(err("read F 1").reason.starts_with("bad handle name"));
        assert!(err("read 1f 1").reason.starts_with("bad handle name"));
        assert!(err("mkdirat AT_FDCWDX d 0755")
            .reason
            .starts_with("bad directory"));
        assert_eq!(err("mkdir \"/a\\0b\" 0755").reason, "NUL byte in a path");
        assert_eq!(
            err("setxattr /f \"user.\\0\" v 0").reason,
            "NUL byte in an xattr name"
        );
        assert_eq!(
            err("mount none /m tmpfs 0 \"a\\0\"").reason,
            "NUL byte in mount data"
        );
        // A NUL byte in data is fine.
        assert_eq!(
            op("setxattr /f user.a \"a\\0b\" 0"),
            Op::Setxattr {
                path: b"/f".to_vec(),
                name: b"user.a".to_vec(),
                value: b"a\0b".to_vec(),
                flags: 0,
                follow: true
            }
        );
        assert_eq!(
            op("as 1000 1000 100,200"),
            Op::As {
                uid: 1000,
                gid: 1000,
                groups: vec![100, 200]
            }
        );
        assert!(err("as 1 1 100,").reason.contains("group list"));
        assert_eq!(
            op("chown /f -1 100"),
            Op::Fchownat {
                path: b"/f".to_vec(),
                uid: u32::MAX,
                gid: 100,
                flags: 0
            }
        );
        // The error names the first bad line, counting every line.
        assert_eq!(err("mkdir /a 0755\n\n# x\nbogus\nalso bogus").line, 4);
    }

    /// A small deterministic generator: the parser must give a result (never
    /// panic) for any bytes, and for lines built from the language's tokens.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        const PIECES: &[&str] = &[
            "open",
            "openat2",
            "mknod",
            "as",
            "mount",
            "lseek",
            "write",
            "f",
            "AT_FDCWD",
            "\"",
            "\\",
            "\\x",
            "\\x4",
            "\"a\\0\"",
            "0",
            "0x",
            "-",
            "-1",
            "0755",
            "08",
            "|",
            "O_RDWR|",
            "S_IFCHR|",
            "O_CREAT",
            "#",
            " ",
            "\t",
            "\n",
            "\r",
            "\u{e9}",
            "\x00",
            "99999999999999999999",
            "RESOLVE_BENEATH",
            ",",
            "1,2",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let mut src = Vec::new();
            let n = rng.below(12);
            for _ in 0..n {
                if rng.below(3) == 0 {
                    src.push(rng.next() as u8);
                } else {
                    src.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
                    if rng.below(2) == 0 {
                        src.push(b' ');
                    }
                }
            }
            match parse_script(&src) {
                Ok(s) => assert!(s.lines.iter().all(|l| !l.text.is_empty())),
                Err(e) => assert!(e.line >= 1 && !e.reason.is_empty()),
            }
        }
    }
}
