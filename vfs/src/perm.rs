//! The generic permission checks of Linux (`fs/namei.c`, `fs/attr.c`,
//! `fs/inode.c`), written once for every filesystem.
//!
//! Each check takes the caller's [`Credentials`] and the attributes that
//! decide (mode, owner, group); none of them reads global state.

use crate::abi::*;
use crate::cred::{Caps, Credentials};

bitflags::bitflags! {
    /// What an access asks for (`MAY_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct May: u32 {
        /// Execute, or search a directory.
        const EXEC = 1;
        /// Write.
        const WRITE = 2;
        /// Read.
        const READ = 4;
    }
}

/// The attributes a permission check needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Mode bits including the type.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Owner {
    /// The owner and mode a `stat` answer gives, for filesystems that
    /// take their permissions from another inode's attributes.
    pub fn of_stat(st: &Statx) -> Owner {
        Owner {
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
        }
    }

    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// `generic_permission`: mode bits, then `CAP_DAC_OVERRIDE` and
/// `CAP_DAC_READ_SEARCH`. Fails with `EACCES`.
pub fn check(cred: &Credentials, o: Owner, want: May) -> Result<()> {
    if mode_allows(cred, o, want) {
        return Ok(());
    }
    if cred.has(Caps::DAC_OVERRIDE) {
        // Execute on a non-directory needs at least one execute bit even for root.
        if !want.contains(May::EXEC) || o.is_dir() || o.mode & 0o111 != 0 {
            return Ok(());
        }
    }
    if cred.has(Caps::DAC_READ_SEARCH) {
        let rest = if o.is_dir() {
            want - May::READ - May::EXEC
        } else {
            want - May::READ
        };
        if rest.is_empty() {
            return Ok(());
        }
    }
    Err(Errno::EACCES)
}

/// Whether the mode bits alone grant `want` (`acl_permission_check`),
/// without capabilities.
pub fn mode_allows(cred: &Credentials, o: Owner, want: May) -> bool {
    let bits = if cred.fsuid == o.uid {
        (o.mode >> 6) & 7
    } else if cred.in_group(o.gid) {
        (o.mode >> 3) & 7
    } else {
        o.mode & 7
    };
    want.bits() & !bits == 0
}

/// `inode_owner_or_capable`: the caller owns the file or has `CAP_FOWNER`.
pub fn is_owner_or_capable(cred: &Credentials, o: Owner) -> bool {
    cred.fsuid == o.uid || cred.has(Caps::FOWNER)
}

/// `check_sticky`: in a sticky directory only the file's owner, the
/// directory's owner or `CAP_FOWNER` may delete or rename an entry.
pub fn may_delete_sticky(cred: &Credentials, dir: Owner, child: Owner) -> bool {
    if dir.mode & S_ISVTX == 0 {
        return true;
    }
    cred.fsuid == child.uid || cred.fsuid == dir.uid || cred.has(Caps::FOWNER)
}

/// The access an `open(2)` asks for, from its flags (`O_TRUNC` asks for write).
pub fn may_for_open(flags: OpenFlags) -> May {
    let mut m = match flags.access() {
        AccessMode::ReadOnly => May::READ,
        AccessMode::WriteOnly => May::WRITE,
        AccessMode::ReadWrite => May::READ | May::WRITE,
        AccessMode::Invalid => May::READ | May::WRITE,
    };
    if flags.contains(OpenFlags::O_TRUNC) {
        m |= May::WRITE;
    }
    m
}

/// `chmod` rules: only the owner (or `CAP_FOWNER`) may change the mode, and
/// set-gid is dropped when the caller is not in the file's group and lacks
/// `CAP_FSETID`. Returns the mode to store.
pub fn check_chmod(cred: &Credentials, o: Owner, new_mode: u32) -> Result<u32> {
    if !is_owner_or_capable(cred, o) {
        return Err(Errno::EPERM);
    }
    let mut mode = new_mode & 0o7777;
    if mode & S_ISGID != 0 && !cred.in_group(o.gid) && !cred.has(Caps::FSETID) {
        mode &= !S_ISGID;
    }
    Ok(mode)
}

/// `chown` rules (`chown_ok`, `chgrp_ok`): changing the owner needs
/// `CAP_CHOWN`; the owner may change the group to one of its groups.
/// `None` means "leave as is" (-1).
pub fn check_chown(cred: &Credentials, o: Owner, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    if let Some(u) = uid {
        if u != o.uid && !cred.has(Caps::CHOWN) {
            return Err(Errno::EPERM);
        }
        if u == o.uid && cred.fsuid != o.uid && !cred.has(Caps::CHOWN) {
            return Err(Errno::EPERM);
        }
    }
    if let Some(g) = gid {
        let owner_may = cred.fsuid == o.uid && (g == o.gid || cred.in_group(g));
        if !owner_may && !cred.has(Caps::CHOWN) {
            return Err(Errno::EPERM);
        }
    }
    Ok(())
}

/// The mode after a chown: set-uid is cleared, and set-gid too when group
/// execute is set (a set-gid without group execute marks mandatory locking
/// and stays). Directories keep their bits. Returns `None` when nothing changes.
pub fn mode_after_chown(mode: u32) -> Option<u32> {
    if mode & S_IFMT == S_IFDIR {
        return None;
    }
    let mut m = mode;
    m &= !S_ISUID;
    if m & S_IXGRP != 0 {
        m &= !S_ISGID;
    }
    (m != mode).then_some(m)
}

/// The mode after a write or truncate by `cred` (`file_remove_privs`): set-uid
/// and set-gid are removed (see below) unless the caller has `CAP_FSETID`.
pub fn mode_after_write(cred: &Credentials, o: Owner) -> Option<u32> {
    let mode = o.mode;
    if mode & S_IFMT != S_IFREG || cred.has(Caps::FSETID) {
        return None;
    }
    let mut m = mode & !S_ISUID;
    // `setattr_should_drop_sgid`: an executable set-gid always goes; a
    // non-executable one goes when the writer is not in the group.
    if m & S_ISGID != 0 && (m & S_IXGRP != 0 || !cred.in_group(o.gid)) {
        m &= !S_ISGID;
    }
    (m != mode).then_some(m)
}

/// The group and mode of a new file in directory `dir` (`inode_init_owner`):
/// a set-gid directory gives its group, and its set-gid bit to new
/// subdirectories; a new non-directory keeps set-gid only when the caller is
/// in the group or has `CAP_FSETID`.
pub fn new_owner(cred: &Credentials, dir: Owner, ftype: FileType, mode: u32) -> (u32, u32, u32) {
    let uid = cred.fsuid;
    if dir.mode & S_ISGID == 0 {
        return (uid, cred.fsgid, mode);
    }
    let gid = dir.gid;
    let mut m = mode;
    if ftype == FileType::Directory {
        m |= S_ISGID;
    } else if m & (S_ISGID | S_IXGRP) == (S_ISGID | S_IXGRP)
        && !cred.in_group(gid)
        && !cred.has(Caps::FSETID)
    {
        m &= !S_ISGID;
    }
    (uid, gid, m)
}

/// `utimensat` rules: setting both times to "now" needs write permission or
/// ownership; explicit times need ownership (or `CAP_FOWNER`).
pub fn check_utimes(cred: &Credentials, o: Owner, explicit: bool) -> Result<()> {
    if is_owner_or_capable(cred, o) {
        return Ok(());
    }
    if explicit {
        return Err(Errno::EPERM);
    }
    check(cred, o, May::WRITE)
}

/// Permission rules for extended attributes by namespace (`xattr_permission`).
/// `write` is true for set and remove. Errors follow Linux: `EOPNOTSUPP` for
/// an unknown namespace, `EPERM` for `trusted.*` without `CAP_SYS_ADMIN` on
/// write (reads then see nothing: the caller maps that to `ENODATA`), and for
/// `user.*` on anything but a regular file or directory.
pub fn check_xattr(cred: &Credentials, o: Owner, name: &[u8], write: bool) -> Result<()> {
    if name.starts_with(b"trusted.") {
        if !cred.has(Caps::SYS_ADMIN) {
            return Err(if write { Errno::EPERM } else { Errno::ENODATA });
        }
        return Ok(());
    }
    if name.starts_with(b"security.") {
        // No DAC check for security.*: commoncap only asks for CAP_SYS_ADMIN
        // to write anything but the file capability.
        if write && name != b"security.capability" && !cred.has(Caps::SYS_ADMIN) {
            return Err(Errno::EPERM);
        }
        return Ok(());
    }
    if name.starts_with(b"user.") {
        let ft = o.mode & S_IFMT;
        if ft != S_IFREG && ft != S_IFDIR {
            return Err(if write { Errno::EPERM } else { Errno::ENODATA });
        }
        if ft == S_IFDIR
            && o.mode & S_ISVTX != 0
            && write
            && cred.fsuid != o.uid
            && !cred.has(Caps::FOWNER)
        {
            return Err(Errno::EPERM);
        }
        return check(cred, o, if write { May::WRITE } else { May::READ });
    }
    if name == b"system.posix_acl_access" || name == b"system.posix_acl_default" {
        // Anyone may read an ACL; only the owner may set one.
        if write && !is_owner_or_capable(cred, o) {
            return Err(Errno::EPERM);
        }
        return Ok(());
    }
    // An unknown namespace passes the VFS checks and is refused by the filesystem.
    check(cred, o, if write { May::WRITE } else { May::READ })?;
    Err(Errno::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(mode: u32, uid: u32, gid: u32) -> Owner {
        Owner { mode, uid, gid }
    }

    #[test]
    fn mode_bits_pick_one_class() {
        let u = Credentials::user(1000, 1000);
        // Owner class applies even when "other" would allow.
        assert_eq!(
            check(&u, o(S_IFREG | 0o007, 1000, 0), May::READ),
            Err(Errno::EACCES)
        );
        assert_eq!(check(&u, o(S_IFREG | 0o070, 0, 1000), May::READ), Ok(()));
        assert_eq!(check(&u, o(S_IFREG | 0o004, 0, 0), May::READ), Ok(()));
        assert_eq!(
            check(&u, o(S_IFREG | 0o004, 0, 0), May::WRITE),
            Err(Errno::EACCES)
        );
    }

    #[test]
    fn supplementary_groups_count() {
        let mut u = Credentials::user(1000, 1000);
        assert!(check(&u, o(S_IFREG | 0o040, 0, 100), May::READ).is_err());
        u.groups = crate::cred::Groups::new(&[100]);
        assert!(check(&u, o(S_IFREG | 0o040, 0, 100), May::READ).is_ok());
    }

    #[test]
    fn root_exec_needs_an_x_bit_on_files() {
        let r = Credentials::root();
        assert!(check(&r, o(S_IFREG | 0o600, 5, 5), May::EXEC).is_err());
        assert!(check(&r, o(S_IFREG | 0o001, 5, 5), May::EXEC).is_ok());
        assert!(check(&r, o(S_IFDIR, 5, 5), May::EXEC).is_ok());
        assert!(check(&r, o(S_IFREG, 5, 5), May::READ | May::WRITE).is_ok());
    }

    #[test]
    fn dac_read_search_only_reads() {
        let mut c = Credentials::user(1, 1);
        c.caps = Caps::DAC_READ_SEARCH;
        assert!(check(&c, o(S_IFREG, 0, 0), May::READ).is_ok());
        assert!(check(&c, o(S_IFREG, 0, 0), May::WRITE).is_err());
        assert!(check(&c, o(S_IFDIR, 0, 0), May::EXEC | May::READ).is_ok());
        assert!(check(&c, o(S_IFREG, 0, 0), May::EXEC).is_err());
    }

    #[test]
    fn sticky_directories() {
        let u = Credentials::user(1000, 1000);
        let dir = o(S_IFDIR | 0o1777, 0, 0);
        assert!(may_delete_sticky(&u, dir, o(S_IFREG, 1000, 0)));
        assert!(!may_delete_sticky(&u, dir, o(S_IFREG, 1001, 0)));
        assert!(may_delete_sticky(
            &u,
            o(S_IFDIR | 0o1777, 1000, 0),
            o(S_IFREG, 1001, 0)
        ));
        assert!(may_delete_sticky(
            &u,
            o(S_IFDIR | 0o777, 0, 0),
            o(S_IFREG, 1001, 0)
        ));
    }

    #[test]
    fn setgid_directory_inheritance() {
        let u = Credentials::user(1000, 1000);
        let dir = o(S_IFDIR | 0o2777, 0, 50);
        assert_eq!(
            new_owner(&u, dir, FileType::Directory, 0o755),
            (1000, 50, 0o2755)
        );
        assert_eq!(
            new_owner(&u, dir, FileType::Regular, 0o2755),
            (1000, 50, 0o755)
        );
        assert_eq!(
            new_owner(&u, o(S_IFDIR | 0o777, 0, 50), FileType::Regular, 0o644),
            (1000, 1000, 0o644)
        );
    }

    #[test]
    fn chown_rules() {
        let mut u = Credentials::user(1000, 1000);
        let f = o(S_IFREG | 0o644, 1000, 1000);
        assert_eq!(check_chown(&u, f, Some(0), None), Err(Errno::EPERM));
        assert_eq!(check_chown(&u, f, Some(1000), None), Ok(()));
        assert_eq!(check_chown(&u, f, None, Some(100)), Err(Errno::EPERM));
        u.groups = crate::cred::Groups::new(&[100]);
        assert_eq!(check_chown(&u, f, None, Some(100)), Ok(()));
        assert_eq!(
            check_chown(&Credentials::root(), f, Some(7), Some(8)),
            Ok(())
        );
    }

    #[test]
    fn setid_bits_cleared() {
        let u = Credentials::user(1, 1);
        assert_eq!(
            mode_after_write(&u, o(S_IFREG | 0o6755, 0, 0)),
            Some(S_IFREG | 0o755)
        );
        assert_eq!(
            mode_after_write(&u, o(S_IFREG | 0o6745, 0, 1)),
            Some(S_IFREG | 0o2745)
        );
        assert_eq!(
            mode_after_write(&u, o(S_IFREG | 0o6745, 0, 0)),
            Some(S_IFREG | 0o745)
        );
        assert_eq!(
            mode_after_write(&Credentials::root(), o(S_IFREG | 0o6755, 0, 0)),
            None
        );
        assert_eq!(mode_after_chown(S_IFREG | 0o4755), Some(S_IFREG | 0o755));
        assert_eq!(check_chmod(&u, o(S_IFREG, 1, 5), 0o2755), Ok(0o755));
        assert_eq!(check_chmod(&u, o(S_IFREG, 2, 5), 0o755), Err(Errno::EPERM));
    }

    #[test]
    fn xattr_namespaces() {
        let u = Credentials::user(1, 1);
        let f = o(S_IFREG | 0o644, 1, 1);
        assert_eq!(check_xattr(&u, f, b"trusted.x", true), Err(Errno::EPERM));
        assert_eq!(check_xattr(&u, f, b"user.x", true), Ok(()));
        assert_eq!(
            check_xattr(&u, o(S_IFLNK | 0o777, 1, 1), b"user.x", true),
            Err(Errno::EPERM)
        );
        assert_eq!(check_xattr(&u, f, b"bogus", true), Err(Errno::EOPNOTSUPP));
    }
}
