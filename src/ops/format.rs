//! How results are printed: bytes, names, stat records, listings.
//!
//! These rules are fixed by the spec (`Output` in `ops-script.md`) so that two
//! runs can be compared byte for byte.

use tessera_vfs::abi::{DirentType, FileType, Statx};

/// Appends `bytes` as a double-quoted string: 0x20..0x7e as themselves except
/// `"` and `\` (escaped with a backslash), every other byte as `\xHH`.
pub fn quote_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'x',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            }
        }
    }
    out.push(b'"');
}

/// The quoted form of `bytes` (see [`quote_into`]).
pub fn quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    quote_into(&mut out, bytes);
    out
}

/// Appends a NAME: as is when every byte is in 0x21..0x7e and none is `"`,
/// `\` or `:`; quoted otherwise. An empty name is quoted too, so that it stays
/// visible.
pub fn name_into(out: &mut Vec<u8>, name: &[u8]) {
    let plain = !name.is_empty()
        && name
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && !matches!(b, b'"' | b'\\' | b':'));
    if plain {
        out.extend_from_slice(name);
    } else {
        quote_into(out, name);
    }
}

/// The word for a file type in stat lines and listings.
pub fn file_type_word(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "reg",
        FileType::Directory => "dir",
        FileType::Symlink => "lnk",
        FileType::CharDevice => "chr",
        FileType::BlockDevice => "blk",
        FileType::Fifo => "fifo",
        FileType::Socket => "sock",
    }
}

/// The word for a directory entry type in listings.
pub fn dirent_type_word(t: DirentType) -> &'static str {
    match t {
        DirentType::Reg => "reg",
        DirentType::Dir => "dir",
        DirentType::Lnk => "lnk",
        DirentType::Chr => "chr",
        DirentType::Blk => "blk",
        DirentType::Fifo => "fifo",
        DirentType::Sock => "sock",
        DirentType::Wht => "wht",
        DirentType::Unknown => "unknown",
    }
}

/// A stat result: `type=T mode=MMMM nlink=N uid=U gid=G`, then ` size=S` for
/// `reg` and `lnk`, then ` rdev=MAJ:MIN` for `chr` and `blk`.
pub fn stat_line(st: &Statx) -> String {
    let ft = st.file_type();
    let word = ft.map_or("unknown", file_type_word);
    let mut s = format!(
        "type={word} mode={:04o} nlink={} uid={} gid={}",
        st.mode & 0o7777,
        st.nlink,
        st.uid,
        st.gid
    );
    match ft {
        Some(FileType::Regular | FileType::Symlink) => s.push_str(&format!(" size={}", st.size)),
        Some(FileType::CharDevice | FileType::BlockDevice) => {
            s.push_str(&format!(" rdev={}:{}", st.rdev.major, st.rdev.minor))
        }
        _ => {}
    }
    s
}

/// A directory listing: the entries other than `.` and `..`, sorted by bytes,
/// each `NAME:T`, each preceded by a space (so `OK` + this is the result).
pub fn listing(mut entries: Vec<(Vec<u8>, DirentType)>) -> Vec<u8> {
    entries.retain(|(name, _)| name != b"." && name != b"..");
    entries.sort_by(|a, b| a.0.cmp(&b.0).then((a.1 as u8).cmp(&(b.1 as u8))));
    let mut out = Vec::new();
    for (name, t) in &entries {
        out.push(b' ');
        name_into(&mut out, name);
        out.push(b':');
        out.extend_from_slice(dirent_type_word(*t).as_bytes());
    }
    out
}

/// An xattr name list: sorted by bytes, each preceded by a space, each
/// printed as a NAME.
pub fn name_list(mut names: Vec<Vec<u8>>) -> Vec<u8> {
    names.sort();
    let mut out = Vec::new();
    for name in &names {
        out.push(b' ');
        name_into(&mut out, name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_vfs::abi::DevId;

    #[test]
    fn quoting_follows_the_spec() {
        assert_eq!(
            quote(b"hi\tthere\n\x00\xff\"\\"),
            br#""hi\x09there\x0a\x00\xff\"\\""#.to_vec()
        );
        assert_eq!(quote(b" ~"), b"\" ~\"".to_vec());
        assert_eq!(quote(b"\x7f"), b"\"\\x7f\"".to_vec());
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for n in [
            &b"Link"[..],
            b"a:b",
            b"with space",
            b"\xc3\xa9",
            b"",
            b"q\"",
            b"b\\s",
        ] {
            out.push(b'|');
            name_into(&mut out, n);
        }
        assert_eq!(
            out,
            br#"|Link|"a:b"|"with space"|"\xc3\xa9"|""|"q\""|"b\\s""#.to_vec()
        );
    }

    #[test]
    fn stat_lines() {
        let mut st = Statx {
            mode: 0o100644,
            nlink: 1,
            size: 16,
            ..Statx::default()
        };
        assert_eq!(
            stat_line(&st),
            "type=reg mode=0644 nlink=1 uid=0 gid=0 size=16"
        );
        st.mode = 0o041777;
        st.nlink = 2;
        assert_eq!(stat_line(&st), "type=dir mode=1777 nlink=2 uid=0 gid=0");
        st.mode = 0o060640;
        st.rdev = DevId::new(259, 300);
        assert_eq!(
            stat_line(&st),
            "type=blk mode=0640 nlink=2 uid=0 gid=0 rdev=259:300"
        );
    }

    #[test]
    fn listings_sort_by_bytes_and_drop_dots() {
        let e = vec![
            (b"zeta".to_vec(), DirentType::Reg),
            (b".".to_vec(), DirentType::Dir),
            (b"Link".to_vec(), DirentType::Lnk),
            (b"..".to_vec(), DirentType::Dir),
            (b"\xc3\xa9".to_vec(), DirentType::Reg),
            (b"a:b".to_vec(), DirentType::Reg),
        ];
        assert_eq!(
            listing(e),
            br#" Link:lnk "a:b":reg zeta:reg "\xc3\xa9":reg"#.to_vec()
        );
        assert_eq!(
            listing(vec![(b".".to_vec(), DirentType::Dir)]),
            b"".to_vec()
        );
    }
}
