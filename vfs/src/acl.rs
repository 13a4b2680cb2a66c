//! POSIX ACLs as extended attributes (`system.posix_acl_access` and
//! `system.posix_acl_default`): the value format and its checks, as
//! `posix_acl_from_xattr` and `posix_acl_valid` make them. Tessera stores
//! ACLs but does not enforce them: permission checks use the mode bits.

use crate::abi::*;

/// The attribute holding a file's access ACL.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The attribute holding a directory's default ACL.
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 1;
const USER: u16 = 2;
const GROUP_OBJ: u16 = 4;
const GROUP: u16 = 8;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// Whether `name` is an ACL attribute, and whether it is the default one.
pub fn kind(name: &[u8]) -> Option<bool> {
    match name {
        ACCESS => Some(false),
        DEFAULT => Some(true),
        _ => None,
    }
}

/// A parsed ACL value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acl {
    /// An empty value: "no ACL".
    Empty,
    /// Says no more than these permission bits (`posix_acl_equiv_mode`).
    Mode(u32),
    /// Needs named entries and a mask.
    Extended,
}

/// Parses and checks an ACL value: `EOPNOTSUPP` for another version,
/// `EINVAL` for a malformed or invalid list.
pub fn parse(v: &[u8]) -> Result<Acl> {
    if v.is_empty() {
        return Ok(Acl::Empty);
    }
    if v.len() < 4 {
        return Err(Errno::EINVAL);
    }
    if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
        return Err(Errno::EOPNOTSUPP);
    }
    if !(v.len() - 4).is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let (mut user_obj, mut group_obj, mut other, mut mask) = (None, None, None, None);
    let mut named = 0;
    let mut last_tag = 0u16;
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]) as u32;
        if perm & !7 != 0 || tag < last_tag {
            return Err(Errno::EINVAL);
        }
        match tag {
            USER_OBJ if user_obj.is_none() => user_obj = Some(perm),
            GROUP_OBJ if group_obj.is_none() => group_obj = Some(perm),
            OTHER if other.is_none() => other = Some(perm),
            MASK if mask.is_none() => mask = Some(perm),
            USER | GROUP => named += 1,
            _ => return Err(Errno::EINVAL),
        }
        last_tag = tag;
    }
    let (Some(u), Some(g), Some(o)) = (user_obj, group_obj, other) else {
        return Err(Errno::EINVAL);
    };
    if named > 0 && mask.is_none() {
        return Err(Errno::EINVAL);
    }
    if named == 0 && mask.is_none() {
        return Ok(Acl::Mode((u << 6) | (g << 3) | o));
    }
    Ok(Acl::Extended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(t, p) in entries {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&p.to_le_bytes());
            v.extend_from_slice(&u32::MAX.to_le_bytes());
        }
        v
    }

    #[test]
    fn formats() {
        assert_eq!(parse(b""), Ok(Acl::Empty));
        assert_eq!(parse(b"\x00\xff"), Err(Errno::EINVAL));
        assert_eq!(parse(b"hello"), Err(Errno::EOPNOTSUPP));
        assert_eq!(
            parse(&acl(&[(1, 7), (4, 5), (0x20, 4)])),
            Ok(Acl::Mode(0o754))
        );
        assert_eq!(
            parse(&acl(&[(1, 7), (2, 5), (4, 5), (0x20, 4)])),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            parse(&acl(&[(1, 7), (2, 5), (4, 5), (0x10, 7), (0x20, 4)])),
            Ok(Acl::Extended)
        );
        assert_eq!(
            parse(&acl(&[(4, 5), (1, 7), (0x20, 4)])),
            Err(Errno::EINVAL)
        );
    }
}
