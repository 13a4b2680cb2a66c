//! Parsing `/proc/self/mountinfo` text into the `mounts` result.
//!
//! Both backends produce mountinfo text and the runner turns it into
//! `PATH:FSTYPE:OPTS` entries with this one parser, so that a difference in
//! the result is a difference in the mount table and never in two parsers.
//!
//! A line is `ID PARENT MAJ:MIN ROOT MOUNTPOINT MOUNTOPTS [OPTIONAL...] -
//! FSTYPE SOURCE SUPEROPTS` (see `proc_pid_mountinfo(5)`); the mount point is
//! already relative to the reader's root, with space, tab, newline and
//! backslash written as three-digit octal escapes.

use super::format::name_into;

/// One mount as the `mounts` operation reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point, relative to the process root, escapes decoded.
    pub path: Vec<u8>,
    /// The filesystem type (after the ` - ` separator).
    pub fstype: Vec<u8>,
    /// Whether the mount is read-only (per-mount `ro`).
    pub read_only: bool,
    /// Per-mount `nosuid`.
    pub nosuid: bool,
    /// Per-mount `nodev`.
    pub nodev: bool,
    /// Per-mount `noexec`.
    pub noexec: bool,
}

impl MountEntry {
    /// `ro` or `rw`, then `,nosuid`, `,nodev`, `,noexec` for the flags set.
    pub fn opts(&self) -> String {
        let mut s = String::from(if self.read_only { "ro" } else { "rw" });
        for (set, word) in [
            (self.nosuid, ",nosuid"),
            (self.nodev, ",nodev"),
            (self.noexec, ",noexec"),
        ] {
            if set {
                s.push_str(word);
            }
        }
        s
    }
}

/// Decodes the `\ooo` octal escapes the kernel writes in mountinfo paths. A
/// backslash not followed by three octal digits is kept as is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(b) = u8::try_from(v) {
                        out.push(b);
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

/// Parses mountinfo text, in its order. Lines that do not have the shape of a
/// mountinfo line are skipped: the text comes from a kernel or from our VFS,
/// and one bad line should not hide the others.
pub fn parse(text: &[u8]) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() < 7 {
            continue;
        }
        let Some(sep) = fields
            .iter()
            .skip(6)
            .position(|f| *f == b"-")
            .map(|p| p + 6)
        else {
            continue;
        };
        let Some(fstype) = fields.get(sep + 1) else {
            continue;
        };
        let mut e = MountEntry {
            path: unescape(fields[4]),
            fstype: unescape(fstype),
            read_only: false,
            nosuid: false,
            nodev: false,
            noexec: false,
        };
        for opt in fields[5].split(|&b| b == b',') {
            match opt {
                b"ro" => e.read_only = true,
                b"nosuid" => e.nosuid = true,
                b"nodev" => e.nodev = true,
                b"noexec" => e.noexec = true,
                _ => {}
            }
        }
        entries.push(e);
    }
    entries
}

/// The `mounts` value: the entries sorted by path (a stable sort, so mounts
/// stacked on one path stay in mountinfo order, bottom first), each
/// ` PATH:FSTYPE:OPTS` with PATH printed as a NAME.
pub fn format(mut entries: Vec<MountEntry>) -> Vec<u8> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for e in &entries {
        out.push(b' ');
        name_into(&mut out, &e.path);
        out.push(b':');
        out.extend_from_slice(&e.fstype);
        out.push(b':');
        out.extend_from_slice(e.opts().as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
100 90 0:50 / / rw,relatime - tmpfs none rw,mode=755
101 100 0:51 / /m rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs none rw,size=64k,mode=700
102 101 0:52 / /m ro,relatime - tmpfs none ro
103 100 0:51 / /b rw,nosuid,nodev,noexec,relatime master:1 propagate_from:2 - tmpfs none rw
104 100 0:53 / /with\\040space\\134x rw - tmpfs none rw
garbage line
";

    #[test]
    fn parses_and_sorts_with_stacking_kept() {
        let out = format(parse(SAMPLE));
        assert_eq!(
            String::from_utf8_lossy(&out),
            " /:tmpfs:rw /b:tmpfs:rw,nosuid,nodev,noexec /m:tmpfs:rw,nosuid,nodev,noexec /m:tmpfs:ro \
             \"/with space\\\\x\":tmpfs:rw"
        );
    }

    #[test]
    fn unescape_keeps_bad_escapes() {
        assert_eq!(unescape(b"a\\040b"), b"a b".to_vec());
        assert_eq!(unescape(b"a\\04"), b"a\\04".to_vec());
        assert_eq!(unescape(b"\\999"), b"\\999".to_vec());
        assert_eq!(unescape(b"\\777"), b"\\777".to_vec());
        assert_eq!(unescape(b"\\"), b"\\".to_vec());
    }

    #[test]
    fn empty_text_is_no_mounts() {
        assert!(parse(b"").is_empty());
        assert_eq!(format(Vec::new()), b"".to_vec());
    }
}
