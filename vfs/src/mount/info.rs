//! Path names of locations (`d_path`, `getcwd`) and the text of
//! `/proc/<pid>/mounts` and `/proc/<pid>/mountinfo`.

use std::sync::Arc;

use crate::mount::{MntFlags, MountNamespace, VirtualDentry};

/// A location's path as seen from `root`.
pub struct PathName {
    /// The bytes, starting with `/`.
    pub path: Vec<u8>,
    /// Whether `root` was met on the way up (otherwise the path is from the
    /// top of the mount tree the location hangs in).
    pub reachable: bool,
}

/// Builds the path of `vd` relative to `root` (`d_path`), climbing through
/// mount points.
pub fn path_of(vd: &VirtualDentry, root: &VirtualDentry) -> PathName {
    let mut names: Vec<crate::dentry::Name> = Vec::new();
    let mut cur = vd.clone();
    let reachable = loop {
        if cur.same(root) {
            break true;
        }
        if cur.is_mount_root() {
            match cur.mount.parent() {
                Some((pm, mp)) => {
                    cur = VirtualDentry {
                        mount: pm,
                        dentry: mp,
                    };
                    continue;
                }
                None => break false,
            }
        }
        let (parent, name) = {
            let l = cur.dentry.link.read();
            (l.parent.clone(), l.name.clone())
        };
        match parent {
            Some(p) => {
                names.push(name);
                cur.dentry = p;
            }
            None => break false,
        }
    };
    let mut path = Vec::new();
    for n in names.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(n);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    PathName { path, reachable }
}

/// The path of a mount's root inside its own filesystem (mountinfo's field 4).
pub fn root_in_fs(vd: &VirtualDentry) -> Vec<u8> {
    let mut names = Vec::new();
    let mut d = vd.mount.root().clone();
    while let Some(p) = d.parent() {
        names.push(d.name());
        d = p;
    }
    let mut path = Vec::new();
    for n in names.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(n);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

/// Escapes space, tab, newline and backslash as octal, as the kernel's `mangle` does.
pub fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => {
                out.extend_from_slice(format!("\\{:03o}", b).as_bytes())
            }
            _ => out.push(b),
        }
    }
}

fn mount_opts(f: MntFlags) -> String {
    let mut s = String::from(if f.contains(MntFlags::RDONLY) {
        "ro"
    } else {
        "rw"
    });
    for (flag, name) in [
        (MntFlags::NOSUID, ",nosuid"),
        (MntFlags::NODEV, ",nodev"),
        (MntFlags::NOEXEC, ",noexec"),
        (MntFlags::NOATIME, ",noatime"),
        (MntFlags::NODIRATIME, ",nodiratime"),
        (MntFlags::RELATIME, ",relatime"),
        (MntFlags::NOSYMFOLLOW, ",nosymfollow"),
    ] {
        if f.contains(flag) {
            s.push_str(name);
        }
    }
    s
}

/// Which text to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountsFormat {
    /// `/proc/<pid>/mounts`: `source target fstype opts 0 0`.
    Mounts,
    /// `/proc/<pid>/mountinfo`.
    MountInfo,
}

/// The mount table of `ns` as a process with root `root` sees it: mounts
/// outside the root are left out.
pub fn mounts_text(
    ns: &Arc<MountNamespace>,
    root: &VirtualDentry,
    format: MountsFormat,
) -> Vec<u8> {
    let mounts = ns.mounts.lock().clone();
    let mut out = Vec::new();
    for m in mounts {
        let mvd = VirtualDentry::root_of(&m);
        let p = path_of(&mvd, root);
        if !p.reachable {
            continue;
        }
        let flags = m.flags();
        let fsopts = m.fs().ops().show_options();
        let mut sb = String::from(if flags.contains(MntFlags::RDONLY) {
            "ro"
        } else {
            "rw"
        });
        if !fsopts.is_empty() {
            sb.push(',');
            sb.push_str(&fsopts);
        }
        match format {
            MountsFormat::Mounts => {
                escape(&mut out, m.source().as_bytes());
                out.push(b' ');
                escape(&mut out, &p.path);
                out.push(b' ');
                escape(&mut out, m.fs().fstype().as_bytes());
                let mut opts = mount_opts(flags);
                if !fsopts.is_empty() {
                    opts.push(',');
                    opts.push_str(&fsopts);
                }
                out.extend_from_slice(format!(" {opts} 0 0\n").as_bytes());
            }
            MountsFormat::MountInfo => {
                let parent_id = m.parent().map_or(m.id(), |(pm, _)| pm.id());
                let dev = m.fs().dev();
                out.extend_from_slice(
                    format!("{} {} {}:{} ", m.id(), parent_id, dev.major, dev.minor).as_bytes(),
                );
                escape(&mut out, &root_in_fs(&mvd));
                out.push(b' ');
                escape(&mut out, &p.path);
                out.push(b' ');
                out.extend_from_slice(mount_opts(flags).as_bytes());
                // One prop lock at a time: the master's is taken after ours is released.
                let (shared, master, unbindable) = {
                    let prop = m.prop.lock();
                    (
                        prop.shared,
                        prop.master.as_ref().and_then(|w| w.upgrade()),
                        prop.unbindable,
                    )
                };
                if let Some(g) = shared {
                    out.extend_from_slice(format!(" shared:{g}").as_bytes());
                }
                if let Some(g) = master.and_then(|mm| mm.prop.lock().shared) {
                    out.extend_from_slice(format!(" master:{g}").as_bytes());
                }
                if unbindable {
                    out.extend_from_slice(b" unbindable");
                }
                out.extend_from_slice(b" - ");
                escape(&mut out, m.fs().fstype().as_bytes());
                out.push(b' ');
                escape(&mut out, m.source().as_bytes());
                out.push(b' ');
                out.extend_from_slice(sb.as_bytes());
                out.push(b'\n');
            }
        }
    }
    out
}
