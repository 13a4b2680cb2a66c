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
    /// The mount id (first field).
    pub id: u64,
    /// The parent mount's id (second field): for a mount stacked on another
    /// at the same path, the one below it.
    pub parent: u64,
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
        let number = |f: &[u8]| {
            std::str::from_utf8(f)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
        };
        let (Some(id), Some(parent)) = (number(fields[0]), number(fields[1])) else {
            continue;
        };
        let mut e = MountEntry {
            id,
            parent,
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

/// The `mounts` value: the entries sorted by path, each ` PATH:FSTYPE:OPTS`
/// with PATH printed as a NAME. Mounts stacked on one path are listed from
/// the bottom up: a mount whose parent is another mount on the same path
/// comes after that one. Mountinfo order is usually that order already (it
/// follows mount ids), but not after a `MS_MOVE` of an older mount on top of
/// a newer one; entries the parent chain does not order keep mountinfo order.
pub fn format(entries: Vec<MountEntry>) -> Vec<u8> {
    let mut groups: std::collections::BTreeMap<Vec<u8>, Vec<MountEntry>> =
        std::collections::BTreeMap::new();
    for e in entries {
        groups.entry(e.path.clone()).or_default().push(e);
    }
    let mut out = Vec::new();
    for (_, group) in groups {
        for e in bottom_up(group) {
            out.push(b' ');
            name_into(&mut out, &e.path);
            out.push(b':');
            out.extend_from_slice(&e.fstype);
            out.push(b':');
            out.extend_from_slice(e.opts().as_bytes());
        }
    }
    out
}

/// Orders mounts on one path so that each comes after the mount it is
/// stacked on.
fn bottom_up(mut group: Vec<MountEntry>) -> Vec<MountEntry> {
    let mut ordered: Vec<MountEntry> = Vec::with_capacity(group.len());
    while !group.is_empty() {
        // The next one: the first (in mountinfo order) whose parent is not
        // still waiting in the group. A cycle (malformed text) would leave
        // none; then take the first, so the loop always ends.
        let pos = group
            .iter()
            .position(|e| e.parent == e.id || !group.iter().any(|o| o.id == e.parent))
            .unwrap_or(0);
        ordered.push(group.remove(pos));
    }
    ordered
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
    fn stacked_mounts_follow_the_parent_chain() {
        // 7 is on /m first; 5 was moved on top of it later (its id is older).
        let text = b"1 1 0:1 / / rw - tmpfs none rw\n5 7 0:5 / /m ro - tmpfs none ro\n7 1 0:7 / /m rw - tmpfs none rw\n";
        assert_eq!(
            String::from_utf8_lossy(&format(parse(text))),
            " /:tmpfs:rw /m:tmpfs:rw /m:tmpfs:ro"
        );
        // A malformed cycle still ends, in mountinfo order.
        let text = b"5 7 0:5 / /m ro - tmpfs none ro\n7 5 0:7 / /m rw - tmpfs none rw\n";
        assert_eq!(
            String::from_utf8_lossy(&format(parse(text))),
            " /m:tmpfs:ro /m:tmpfs:rw"
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
