//! The Linux host-mount backend, through mount(2) and umount2(2).
//!
//! System calls go through `rustix`: its typed, safe wrappers over mount(2)
//! and umount2(2) keep this module free of `unsafe` and of hand-made C
//! strings, and it reports errors as plain errno values that map one to one
//! onto [`Errno`].
//!
//! Options are read as mount(8) and containerd read them: flag words (`ro`,
//! `nosuid`, `rbind`, ...) become `MS_*` flags, propagation words (`rprivate`,
//! `shared`, ...) are applied after the mount, and everything else is joined
//! with commas into the filesystem's data string (`lowerdir=...` for overlay,
//! `size=...` for tmpfs).
//!
//! * `bind` (or any mount whose options include `bind` or `rbind`) is a bind
//!   mount, recursive with `rbind`. mount(2) ignores `MS_RDONLY` and the
//!   other per-mount flags on the creating call of a bind, so when any are
//!   asked for they are applied by a second, remounting call
//!   (`MS_REMOUNT | MS_BIND`), which is what makes a read-only bind
//!   read-only. If that call fails, the bind is unmounted again.
//! * `overlay`, `tmpfs` and any other type go to mount(2) as a filesystem
//!   type, with the mount's `source` as the device name.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags};
use tessera_vfs::Errno;

use super::{Cause, Mount, MountError, Op, UnmountFlags};

/// The most mounts [`unmount_all`] peels off one target before giving up
/// (so that a target something keeps mounting on cannot make it loop).
pub const MAX_STACKED_MOUNTS: usize = 4096;

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_raw(e.raw_os_error())
}

/// A mount's options, sorted into what mount(2) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedOptions {
    /// `MS_*` flags to set (`MS_BIND` included for `bind`/`rbind`).
    pub flags: MountFlags,
    /// Flags the options explicitly cleared (`rw`, `suid`, ...).
    pub cleared: MountFlags,
    /// `rbind`: bind the whole tree.
    pub recursive: bool,
    /// Propagation changes to apply after mounting, in order.
    pub propagation: Vec<MountPropagationFlags>,
    /// The remaining options, comma-joined, for the filesystem.
    pub data: String,
}

/// Sorts `options` into flags, propagation and filesystem data.
///
/// # Errors
///
/// [`Cause::InvalidOption`] for `remount` (a remount is not a mount to make)
/// and for options holding a NUL byte.
pub fn parse_options(options: &[String]) -> Result<ParsedOptions, Cause> {
    let mut p = ParsedOptions {
        flags: MountFlags::empty(),
        cleared: MountFlags::empty(),
        recursive: false,
        propagation: Vec::new(),
        data: String::new(),
    };
    let mut data: Vec<&str> = Vec::new();
    for o in options {
        if o.contains('\0') {
            return Err(Cause::InvalidOption {
                option: o.clone(),
                reason: "contains a NUL byte".into(),
            });
        }
        let (set, flag) = match o.as_str() {
            "defaults" => continue,
            "ro" => (true, MountFlags::RDONLY),
            "rw" => (false, MountFlags::RDONLY),
            "nosuid" => (true, MountFlags::NOSUID),
            "suid" => (false, MountFlags::NOSUID),
            "nodev" => (true, MountFlags::NODEV),
            "dev" => (false, MountFlags::NODEV),
            "noexec" => (true, MountFlags::NOEXEC),
            "exec" => (false, MountFlags::NOEXEC),
            "sync" => (true, MountFlags::SYNCHRONOUS),
            "async" => (false, MountFlags::SYNCHRONOUS),
            "dirsync" => (true, MountFlags::DIRSYNC),
            "mand" => (true, MountFlags::PERMIT_MANDATORY_FILE_LOCKING),
            "nomand" => (false, MountFlags::PERMIT_MANDATORY_FILE_LOCKING),
            "noatime" => (true, MountFlags::NOATIME),
            "atime" => (false, MountFlags::NOATIME),
            "nodiratime" => (true, MountFlags::NODIRATIME),
            "diratime" => (false, MountFlags::NODIRATIME),
            "relatime" => (true, MountFlags::RELATIME),
            "norelatime" => (false, MountFlags::RELATIME),
            "strictatime" => (true, MountFlags::STRICTATIME),
            "nostrictatime" => (false, MountFlags::STRICTATIME),
            "lazytime" => (true, MountFlags::LAZYTIME),
            "nolazytime" => (false, MountFlags::LAZYTIME),
            "nosymfollow" => (true, MountFlags::NOSYMFOLLOW),
            "symfollow" => (false, MountFlags::NOSYMFOLLOW),
            "bind" => (true, MountFlags::BIND),
            "rbind" => {
                p.recursive = true;
                (true, MountFlags::BIND)
            }
            "remount" => {
                return Err(Cause::InvalidOption {
                    option: o.clone(),
                    reason: "a remount is not a mount to make".into(),
                })
            }
            other => {
                if let Some(prop) = propagation(other) {
                    p.propagation.push(prop);
                } else if !other.is_empty() {
                    data.push(other);
                }
                continue;
            }
        };
        if set {
            p.flags |= flag;
            p.cleared -= flag;
        } else {
            p.flags -= flag;
            p.cleared |= flag;
        }
    }
    p.data = data.join(",");
    Ok(p)
}

fn propagation(word: &str) -> Option<MountPropagationFlags> {
    let (rec, base) = match word.strip_prefix('r') {
        Some(rest @ ("private" | "shared" | "slave" | "unbindable")) => (true, rest),
        _ => (false, word),
    };
    let flag = match base {
        "private" => MountPropagationFlags::PRIVATE,
        "shared" => MountPropagationFlags::SHARED,
        "slave" => MountPropagationFlags::DOWNSTREAM,
        "unbindable" => MountPropagationFlags::UNBINDABLE,
        _ => return None,
    };
    Some(if rec {
        flag | MountPropagationFlags::REC
    } else {
        flag
    })
}

/// The per-mount flags a bind takes only through a remount.
fn remount_flags() -> MountFlags {
    MountFlags::RDONLY
        | MountFlags::NOSUID
        | MountFlags::NODEV
        | MountFlags::NOEXEC
        | MountFlags::NOATIME
        | MountFlags::NODIRATIME
        | MountFlags::RELATIME
        | MountFlags::STRICTATIME
        | MountFlags::NOSYMFOLLOW
}

/// Mounts `m` on `target`.
///
/// # Errors
///
/// The step that failed, with its errno; a mount made before a later step
/// failed has been unmounted.
pub fn mount(m: &Mount, target: &Path) -> Result<(), MountError> {
    let opts =
        parse_options(&m.options).map_err(|c| MountError::new(Op::ParseOptions, target, c))?;
    let is_bind = m.kind == "bind" || opts.flags.contains(MountFlags::BIND);
    if is_bind {
        bind(m, target, &opts)?;
    } else {
        filesystem(m, target, &opts)?;
    }
    for prop in &opts.propagation {
        if let Err(e) = rustix::mount::mount_change(target, *prop) {
            undo(target);
            return Err(MountError::new(Op::SetPropagation, target, errno(e)));
        }
    }
    Ok(())
}

fn undo(target: &Path) {
    if let Err(e) = rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        log::warn!("undoing the mount at {}: {}", target.display(), errno(e));
    }
}

fn bind(m: &Mount, target: &Path, opts: &ParsedOptions) -> Result<(), MountError> {
    let made = if opts.recursive {
        rustix::mount::mount_bind_recursive(m.source.as_str(), target)
    } else {
        rustix::mount::mount_bind(m.source.as_str(), target)
    };
    made.map_err(|e| MountError::new(Op::MountSyscall, target, errno(e)))?;

    let wanted = opts.flags & remount_flags();
    if wanted.is_empty() {
        return Ok(());
    }
    // A remount replaces the per-mount flags, and the kernel refuses to
    // drop a locked nosuid/nodev/noexec (inherited in a user namespace), so
    // keep those the new mount already has unless the options cleared them.
    let kept = match rustix::fs::statvfs(target) {
        Ok(st) => {
            let mut kept = MountFlags::empty();
            for (vfs, flag) in [
                (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
                (StatVfsMountFlags::NODEV, MountFlags::NODEV),
                (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
            ] {
                if st.f_flag.contains(vfs) && !opts.cleared.contains(flag) {
                    kept |= flag;
                }
            }
            kept
        }
        Err(_) => MountFlags::empty(),
    };
    if let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | wanted | kept, "") {
        undo(target);
        return Err(MountError::new(Op::Remount, target, errno(e)));
    }
    Ok(())
}

fn filesystem(m: &Mount, target: &Path, opts: &ParsedOptions) -> Result<(), MountError> {
    if m.kind.is_empty() || m.kind.contains('\0') {
        return Err(MountError::new(
            Op::Mount,
            target,
            Cause::UnsupportedKind(m.kind.clone()),
        ));
    }
    if m.kind == "overlay" && !opts.data.split(',').any(|o| o.starts_with("lowerdir=")) {
        return Err(MountError::new(
            Op::ParseOptions,
            target,
            Cause::InvalidOption {
                option: opts.data.clone(),
                reason: "an overlay needs a lowerdir= option".into(),
            },
        ));
    }
    check_data_len(&opts.data).map_err(|c| MountError::new(Op::ParseOptions, target, c))?;
    let source = if m.source.is_empty() {
        m.kind.as_str()
    } else {
        m.source.as_str()
    };
    // parse_options refused NUL bytes, so this cannot fail; report it as an
    // invalid option all the same rather than panic.
    let data = CString::new(opts.data.as_str()).map_err(|_| {
        MountError::new(
            Op::ParseOptions,
            target,
            Cause::InvalidOption {
                option: opts.data.clone(),
                reason: "contains a NUL byte".into(),
            },
        )
    })?;
    let data = if opts.data.is_empty() {
        None
    } else {
        Some(data.as_c_str())
    };
    rustix::mount::mount(source, target, m.kind.as_str(), opts.flags, data)
        .map_err(|e| MountError::new(Op::MountSyscall, target, errno(e)))
}

/// The most bytes of filesystem data mount(2) reads (one page on every
/// Linux architecture with 4 KiB pages, including the NUL).
pub const MAX_DATA_LEN: usize = 4095;

/// mount(2) silently cuts its data at a page, which would turn a long
/// `lowerdir=` list into a different, shorter stack; refuse instead.
fn check_data_len(data: &str) -> Result<(), Cause> {
    if data.len() > MAX_DATA_LEN {
        return Err(Cause::InvalidOption {
            option: format!("{}...", data.chars().take(64).collect::<String>()),
            reason: format!(
                "the options are {} bytes; mount(2) reads at most {MAX_DATA_LEN}",
                data.len()
            ),
        });
    }
    Ok(())
}

fn sys_flags(flags: UnmountFlags) -> rustix::mount::UnmountFlags {
    // Our bits are the kernel's (MNT_FORCE=1, MNT_DETACH=2, MNT_EXPIRE=4,
    // UMOUNT_NOFOLLOW=8).
    rustix::mount::UnmountFlags::from_bits_retain(flags.bits())
}

/// umount2(2) of `target`: `EINVAL` if it is not a mount point.
///
/// # Errors
///
/// The errno of umount2(2).
pub fn unmount(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    rustix::mount::unmount(target, sys_flags(flags))
        .map_err(|e| MountError::new(Op::UnmountSyscall, target, errno(e)))
}

/// Unmounts until `target` is no longer a mount point. An empty path, a
/// missing one, and one that is not a mount point are fine.
///
/// # Errors
///
/// The first errno other than `EINVAL`/`ENOENT`, or
/// [`Cause::TooManyMounts`] after [`MAX_STACKED_MOUNTS`] unmounts.
pub fn unmount_all(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    if target.as_os_str().is_empty() {
        return Ok(());
    }
    for _ in 0..MAX_STACKED_MOUNTS {
        match rustix::mount::unmount(target, sys_flags(flags)) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {
                return Ok(())
            }
            Err(e) => return Err(MountError::new(Op::UnmountSyscall, target, errno(e))),
        }
    }
    Err(MountError::new(
        Op::Unmount,
        target,
        Cause::TooManyMounts(MAX_STACKED_MOUNTS),
    ))
}

/// Unmounts every mount at or below `target`, deepest first.
///
/// # Errors
///
/// The first failure; the other mount points are still tried.
pub fn unmount_recursive(target: &Path, flags: UnmountFlags) -> Result<(), MountError> {
    if target.as_os_str().is_empty() {
        return Ok(());
    }
    // mountinfo names mount points by their resolved absolute paths.
    let target = match std::fs::canonicalize(target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            let code = Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO.raw()));
            return Err(MountError::new(Op::Inspect, target, code));
        }
    };
    // thread-self, not self: a thread that unshared its mount namespace
    // sees a different table from the process's main thread.
    let info = std::fs::read("/proc/thread-self/mountinfo")
        .or_else(|_| std::fs::read("/proc/self/mountinfo"))
        .map_err(|e| {
            let code = Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO.raw()));
            MountError::new(Op::ReadMountinfo, target.as_path(), code)
        })?;
    let mut points: Vec<PathBuf> = mount_points(&info)
        .into_iter()
        .filter(|p| p.starts_with(&target))
        .collect();
    // Deepest first; a path with more components is never a parent of one
    // with fewer.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    let mut first_error = None;
    for p in &points {
        if let Err(e) = unmount_all(p, flags) {
            log::warn!("unmount_recursive: {e}");
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The mount points (fifth field, octal escapes undone) of a
/// `/proc/<pid>/mountinfo` text. Lines too short to have one are skipped.
pub fn mount_points(mountinfo: &[u8]) -> Vec<PathBuf> {
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(v) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_propagation_and_data_are_sorted() {
        let p = parse_options(&opts(&[
            "rbind", "ro", "nosuid", "rprivate", "size=1m", "", "mode=755",
        ]))
        .unwrap();
        assert!(p.recursive);
        assert_eq!(
            p.flags,
            MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID
        );
        assert_eq!(
            p.propagation,
            vec![MountPropagationFlags::PRIVATE | MountPropagationFlags::REC]
        );
        assert_eq!(p.data, "size=1m,mode=755");
    }

    #[test]
    fn later_option_wins() {
        let p = parse_options(&opts(&["ro", "rw"])).unwrap();
        assert!(!p.flags.contains(MountFlags::RDONLY));
        assert!(p.cleared.contains(MountFlags::RDONLY));
        let p = parse_options(&opts(&["suid", "nosuid"])).unwrap();
        assert!(p.flags.contains(MountFlags::NOSUID));
        assert!(!p.cleared.contains(MountFlags::NOSUID));
    }

    #[test]
    fn remount_and_nul_are_refused() {
        assert!(parse_options(&opts(&["remount"])).is_err());
        assert!(parse_options(&opts(&["a\0b"])).is_err());
        // A word that merely starts with r is data, not propagation.
        assert_eq!(parse_options(&opts(&["rxyz"])).unwrap().data, "rxyz");
    }

    #[test]
    fn data_longer_than_a_page_is_refused() {
        assert!(check_data_len(&"x".repeat(MAX_DATA_LEN)).is_ok());
        let e = check_data_len(&"x".repeat(MAX_DATA_LEN + 1)).unwrap_err();
        assert!(e.to_string().contains("4096 bytes"), "{e}");
    }

    #[test]
    fn mountinfo_points_are_unescaped() {
        let text = b"22 1 0:21 / / rw shared:1 - ext4 /dev/root rw\n\
                     40 22 0:40 / /tmp/a\\040b rw - tmpfs tmpfs rw\n\
                     41 22 0:41 / /x\\134y rw - tmpfs tmpfs rw\n\
                     short line\n";
        assert_eq!(
            mount_points(text),
            vec![
                PathBuf::from("/"),
                PathBuf::from("/tmp/a b"),
                PathBuf::from("/x\\y")
            ]
        );
    }

    #[test]
    fn unescape_leaves_bad_escapes() {
        assert_eq!(unescape(b"a\\09"), b"a\\09".to_vec());
        assert_eq!(unescape(b"a\\"), b"a\\".to_vec());
        assert_eq!(unescape(b"\\777"), b"\\777".to_vec());
        assert_eq!(unescape(b"\\011"), b"\t".to_vec());
    }
}
