//! Consistency checks of a process's view of the VFS, for fuzzers and tests.
//!
//! [`Process::check_invariants`] walks everything the process can reach and
//! reports the first rule of the model (see the crate documentation and
//! [`crate::dentry`], [`crate::mount`]) that does not hold. It is slow compared
//! with a system call (it visits every cached dentry of every mounted
//! filesystem), so it is meant to run between operations in a checking mode,
//! never on a hot path. It only reads: it takes the locks of the lock order
//! for reading, one at a time, and never holds two maps at once except
//! `children` then `link`, which is the documented order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::abi::FileType;
use crate::dentry::Dentry;
use crate::inode::Coherence;
use crate::mount::{Mount, MountNamespace};
use crate::process::{Process, DEFAULT_MAX_FDS};

/// Identity of an `Arc` target, for sets and maps (the address; the target
/// is kept alive by the walk for as long as the identity is used).
fn addr<T: ?Sized>(a: &Arc<T>) -> usize {
    Arc::as_ptr(a) as *const () as usize
}

/// The names and subdirectories counted for one inode while walking a tree.
#[derive(Default)]
struct Counted {
    names: u32,
    subdirs: u32,
}

impl Process {
    /// Checks the invariants of everything this process can reach:
    ///
    /// - every mount of the namespace is connected, belongs to it, is not
    ///   unmounted, and (but the root) has a live parent mount of the same
    ///   namespace and a mount point that is a live dentry of the parent's
    ///   filesystem, registered in the mount table;
    /// - every mount point's `mounts` count equals the number of mounts
    ///   attached on it (the count that tells the walker to cross);
    /// - in every mounted filesystem, each cached child's link names its
    ///   directory and its key, the by-name and by-position maps agree, no
    ///   dentry is reachable from two parents, no dead dentry still has a name;
    /// - on an authoritative filesystem (tmpfs), `nlink` equals the names
    ///   found for a non-directory and 2 + its subdirectories for a directory;
    /// - every descriptor's description is in a live place: its dentry belongs
    ///   to its mount's filesystem, its mount is in the namespace unless it was
    ///   unmounted, and a dentry that is not dead is still under its name;
    /// - every entry of the walk's lookup cache for a directory found here
    ///   names a child that directory's map holds under that name.
    ///
    /// # Errors
    ///
    /// A description of the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ns = self.namespace();
        let mounts = check_mounts(self, &ns)?;
        let mut seen_fs = HashSet::new();
        let mut mountpoints: HashMap<usize, u32> = HashMap::new();
        let mut dirs: HashMap<u64, Arc<Dentry>> = HashMap::new();
        for (_, mp) in self.vfs().mount_table.read().keys() {
            *mountpoints.entry(*mp).or_default() += 1;
        }
        for m in &mounts {
            if seen_fs.insert(m.fs().id()) {
                check_tree(m, &mountpoints, &mut dirs)?;
            }
        }
        check_lookup_cache(&dirs)?;
        check_fds(self, &ns)
    }
}

/// The mount checks; returns the namespace's mounts.
fn check_mounts(p: &Process, ns: &Arc<MountNamespace>) -> Result<Vec<Arc<Mount>>, String> {
    let list: Vec<Arc<Mount>> = ns.mounts.lock().clone();
    let root = ns.root();
    let ids: HashSet<u64> = list.iter().map(|m| m.id()).collect();
    if ids.len() != list.len() {
        return Err("a mount is listed twice in the namespace".into());
    }
    if !ids.contains(&root.id()) {
        return Err(format!(
            "the namespace root {root:?} is not in its mount list"
        ));
    }
    let table = p.vfs().mount_table.read().clone();
    for m in &list {
        let l = m.link.read();
        if !l.connected || l.umounted {
            return Err(format!(
                "{m:?} is listed in the namespace but connected={} umounted={}",
                l.connected, l.umounted
            ));
        }
        if !l.ns.upgrade().is_some_and(|n| Arc::ptr_eq(&n, ns)) {
            return Err(format!(
                "{m:?} is listed in a namespace it does not point to"
            ));
        }
        if Arc::ptr_eq(m, &root) {
            continue;
        }
        let (Some(parent), Some(mp)) = (l.parent.clone(), l.mountpoint.clone()) else {
            return Err(format!(
                "{m:?} is not the root but has no parent or mount point"
            ));
        };
        if !ids.contains(&parent.id()) {
            return Err(format!(
                "{m:?} has parent {parent:?}, which is not a live mount of the namespace"
            ));
        }
        if mp.is_dead() {
            return Err(format!("{m:?} is attached on a removed dentry"));
        }
        if !mp.is_descendant_of(parent.fs().root()) {
            return Err(format!(
                "{m:?} is attached on a dentry outside its parent's filesystem"
            ));
        }
        match table.get(&(parent.id(), addr(&mp))) {
            Some(t) if Arc::ptr_eq(t, m) => {}
            Some(t) => {
                return Err(format!(
                    "{m:?} is attached on {parent:?}, but the mount table names {t:?} there"
                ))
            }
            None => return Err(format!("{m:?} is missing from the mount table")),
        }
    }
    for ((pid, mp), m) in &table {
        let l = m.link.read();
        let parent_ok = l.parent.as_ref().is_some_and(|pm| pm.id() == *pid);
        let mp_ok = l.mountpoint.as_ref().is_some_and(|d| addr(d) == *mp);
        if !l.connected || !parent_ok || !mp_ok {
            return Err(format!(
                "the mount table holds {m:?} under a place it is not attached at \
                 (connected={}, parent matches={parent_ok}, mount point matches={mp_ok})",
                l.connected
            ));
        }
    }
    Ok(list)
}

/// Walks one mounted filesystem's cached tree from its root.
fn check_tree(
    m: &Arc<Mount>,
    mountpoints: &HashMap<usize, u32>,
    dirs: &mut HashMap<u64, Arc<Dentry>>,
) -> Result<(), String> {
    let fs = m.fs();
    let root = fs.root().clone();
    if root.parent().is_some() {
        return Err(format!(
            "the root dentry of {}'s filesystem has a parent",
            fs.fstype()
        ));
    }
    let authoritative = root.inode().coherence() == Coherence::Authoritative;
    let mut visited: HashSet<usize> = HashSet::new();
    let mut counts: HashMap<usize, (Arc<dyn crate::inode::Inode>, Counted)> = HashMap::new();
    let mut stack = vec![root.clone()];
    visited.insert(addr(&root));
    let show = |d: &Arc<Dentry>| String::from_utf8_lossy(&d.name()).into_owned();
    while let Some(dir) = stack.pop() {
        check_mount_count(&dir, mountpoints, fs.fstype())?;
        if dir.file_type() != dir.inode().file_type() {
            return Err(format!(
                "dentry {:?} caches type {:?} but its inode is {:?}",
                show(&dir),
                dir.file_type(),
                dir.inode().file_type()
            ));
        }
        counts
            .entry(addr(dir.inode()))
            .or_insert_with(|| (dir.inode().clone(), Counted::default()));
        let Some(state) = dir.dir.as_ref() else {
            continue;
        };
        dirs.insert(state.id, dir.clone());
        let ch = state.children.read();
        if ch.by_name.len() != ch.order.len() {
            return Err(format!(
                "directory {:?} has {} children by name but {} by position",
                show(&dir),
                ch.by_name.len(),
                ch.order.len()
            ));
        }
        let mut subdirs = 0;
        for (name, child) in &ch.by_name {
            let l = child.link.read();
            let child_name = String::from_utf8_lossy(name).into_owned();
            if !l.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &dir)) {
                return Err(format!(
                    "{child_name:?} is a child of {:?} but its link names another parent",
                    show(&dir)
                ));
            }
            if l.name != *name {
                return Err(format!(
                    "{child_name:?} in {:?} is linked under the name {:?}",
                    show(&dir),
                    String::from_utf8_lossy(&l.name)
                ));
            }
            let pos = child.pos.load(std::sync::atomic::Ordering::Relaxed);
            if !ch.order.get(pos).is_some_and(|o| Arc::ptr_eq(o, child)) {
                return Err(format!(
                    "{child_name:?} in {:?} is not at its position {pos} in the directory order",
                    show(&dir),
                ));
            }
            drop(l);
            if child.is_dead() {
                return Err(format!(
                    "{child_name:?} in {:?} is dead but still has a name",
                    show(&dir)
                ));
            }
            if !visited.insert(addr(child)) {
                return Err(format!(
                    "{child_name:?} in {:?} is reachable from two parents",
                    show(&dir)
                ));
            }
            if child.is_dir() {
                subdirs += 1;
            }
            let entry = counts
                .entry(addr(child.inode()))
                .or_insert_with(|| (child.inode().clone(), Counted::default()));
            entry.1.names += 1;
            stack.push(child.clone());
        }
        drop(ch);
        if let Some(e) = counts.get_mut(&addr(dir.inode())) {
            e.1.subdirs = subdirs;
        }
    }
    if !authoritative {
        return Ok(());
    }
    for (inode, c) in counts.values() {
        let st = inode.stat();
        let want = if inode.file_type() == FileType::Directory {
            2 + c.subdirs
        } else {
            c.names
        };
        if st.nlink != want {
            return Err(format!(
                "inode {} ({:?}) of a {} filesystem has nlink {} but {} {} found",
                st.ino,
                inode.file_type(),
                fs.fstype(),
                st.nlink,
                want,
                if inode.file_type() == FileType::Directory {
                    "(2 + subdirectories)"
                } else {
                    "names"
                }
            ));
        }
    }
    Ok(())
}

/// The lookup cache is exact for the directories found (`dirs`, by id):
/// each of their entries names a child their map holds under that name.
/// (Ids are never reused, so another VFS's entries are never taken for
/// these.)
fn check_lookup_cache(dirs: &HashMap<u64, Arc<Dentry>>) -> Result<(), String> {
    for (dir, name, child) in crate::dcache::entries() {
        let Some(d) = dirs.get(&dir) else {
            continue;
        };
        let held = d
            .dir
            .as_ref()
            .and_then(|s| s.children.read().by_name.get(&name).cloned());
        if !held.is_some_and(|h| Arc::ptr_eq(&h, &child)) {
            return Err(format!(
                "the lookup cache holds {:?} in {:?}, which its map does not hold under that name",
                String::from_utf8_lossy(&name),
                String::from_utf8_lossy(&d.name())
            ));
        }
    }
    Ok(())
}

/// A dentry's `mounts` count is the number of mount-table entries on it.
fn check_mount_count(
    d: &Arc<Dentry>,
    mountpoints: &HashMap<usize, u32>,
    fstype: &str,
) -> Result<(), String> {
    let want = mountpoints.get(&addr(d)).copied().unwrap_or(0);
    let have = d.mounts.load(std::sync::atomic::Ordering::Acquire);
    if have != want {
        return Err(format!(
            "dentry {:?} of a {fstype} filesystem counts {have} mounts on it, the mount table {want}",
            String::from_utf8_lossy(&d.name())
        ));
    }
    Ok(())
}

/// The descriptor checks.
fn check_fds(p: &Process, ns: &Arc<MountNamespace>) -> Result<(), String> {
    let ids: HashSet<u64> = ns.mounts.lock().iter().map(|m| m.id()).collect();
    // The table has no public iterator: probing every possible number is cheap
    // next to the tree walk, and sees exactly what the system calls see.
    for fd in 0..DEFAULT_MAX_FDS as i32 {
        let Ok(f) = p.file(fd) else { continue };
        let vd = f.location();
        let mut top = vd.dentry.clone();
        while let Some(parent) = top.parent() {
            top = parent;
        }
        if !Arc::ptr_eq(&top, vd.mount.fs().root()) {
            return Err(format!(
                "descriptor {fd}: its dentry is not in its mount's filesystem"
            ));
        }
        if !vd.mount.is_umounted() && !ids.contains(&vd.mount.id()) {
            return Err(format!(
                "descriptor {fd}: its mount {:?} is neither in the namespace nor unmounted",
                vd.mount
            ));
        }
        let d = &vd.dentry;
        let Some(parent) = d.parent() else { continue };
        let listed = parent
            .cached_child(&d.name())
            .is_some_and(|c| Arc::ptr_eq(&c, d));
        if d.is_dead() == listed {
            return Err(format!(
                "descriptor {fd}: dentry {:?} is {} but {} under its name",
                String::from_utf8_lossy(&d.name()),
                if d.is_dead() { "dead" } else { "alive" },
                if listed { "still listed" } else { "not listed" }
            ));
        }
    }
    Ok(())
}
