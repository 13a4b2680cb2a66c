//! The mount operations: new mounts, binds, moves, remounts, propagation
//! changes, unmounts and `pivot_root`, with Linux's errno rules
//! (`fs/namespace.c`). Callers resolve paths first; everything here runs
//! under `Vfs::namespace_lock`.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use crate::abi::*;
use crate::cred::Credentials;
use crate::dentry::{Dentry, Filesystem, NameHasher};
use crate::fstype::{MountData, MountRequest, PathBase};
use crate::mount::propagation::PropagationType;
use crate::mount::{MntFlags, Mount, MountNamespace, VirtualDentry};
use crate::Vfs;

/// Mounts to attach together: each with the index of its parent in the list
/// and its mount point (the first one, `None`, goes at the target).
type MountTree = Vec<(Arc<Mount>, Option<(usize, Arc<Dentry>)>)>;

/// Mounts in no namespace that a filesystem above keeps (an overlay's
/// private layer clones, [`Vfs::new_disconnected_mount`]): their writers
/// count when a filesystem is made read-only. Kept apart from
/// `Filesystem`, whose layout the walk's code is sensitive to.
static PRIVATE_MOUNTS: parking_lot::Mutex<Vec<std::sync::Weak<Mount>>> =
    parking_lot::Mutex::new(Vec::new());

/// A mount that gets a copy by propagation: whether it is a peer of the
/// destination, and its peer group when the copy was decided.
type Target = (Arc<Mount>, bool, Option<u32>);

impl Vfs {
    /// Builds a filesystem instance of type `fstype`, read-only when
    /// `MS_RDONLY` or the data's `ro` asks. `internal` allows types that
    /// user mounts may not create.
    #[allow(clippy::too_many_arguments)]
    pub fn new_filesystem(
        self: &Arc<Self>,
        cred: &Credentials,
        fstype: &str,
        source: &[u8],
        flags: MountFlags,
        data: &[u8],
        internal: bool,
        at: Option<PathBase<'_>>,
    ) -> Result<Arc<Filesystem>> {
        let t = self.fstypes.get(fstype)?;
        if !internal && !t.options().allow_user_mount {
            return Err(Errno::ENODEV);
        }
        let mut md = MountData::parse(data)?;
        // `ro` / `rw` in the data decide for the superblock over MS_RDONLY.
        let sb_ro = md
            .take_sb_flags(false)?
            .unwrap_or(flags.contains(MountFlags::MS_RDONLY));
        let nf = t.mount(&MountRequest {
            vfs: self,
            cred,
            source,
            flags,
            data: &md,
            at,
        })?;
        let fs = Filesystem::new(t.name(), t.options(), self.anon_dev(), nf.ops, nf.root);
        fs.set_readonly(sb_ro || fs.ops().is_readonly());
        Ok(fs)
    }

    /// Makes a mount of a new filesystem that is attached nowhere yet.
    pub fn mount_disconnected(
        self: &Arc<Self>,
        cred: &Credentials,
        fstype: &str,
        source: &[u8],
        flags: MountFlags,
        data: &[u8],
    ) -> Result<Arc<Mount>> {
        self.mount_disconnected_at(cred, fstype, source, flags, data, None)
    }

    /// [`Vfs::mount_disconnected`], resolving path options from `at`.
    #[allow(clippy::too_many_arguments)]
    pub fn mount_disconnected_at(
        self: &Arc<Self>,
        cred: &Credentials,
        fstype: &str,
        source: &[u8],
        flags: MountFlags,
        data: &[u8],
        at: Option<PathBase<'_>>,
    ) -> Result<Arc<Mount>> {
        let fs = self.new_filesystem(cred, fstype, source, flags, data, true, at)?;
        let root = fs.root().clone();
        Ok(Mount::new(
            fs,
            root,
            MntFlags::from_mount_flags(flags),
            &String::from_utf8_lossy(source),
        ))
    }

    /// Wraps an existing location in a new, unattached mount (a bind that is
    /// not connected yet; overlay layers use this).
    pub fn new_disconnected_mount(&self, vd: &VirtualDentry, flags: MntFlags) -> Arc<Mount> {
        let m = Mount::new(
            vd.mount.fs().clone(),
            vd.dentry.clone(),
            flags,
            vd.mount.source(),
        );
        let mut kept = PRIVATE_MOUNTS.lock();
        kept.retain(|w| w.strong_count() > 0);
        kept.push(Arc::downgrade(&m));
        m
    }

    /// Makes a namespace whose root is `root`. The root is mounted over an
    /// empty anonymous directory, so that it has a parent like a Linux root
    /// stacked on rootfs (`pivot_root` needs that), and `..` above it stays.
    pub fn new_namespace(self: &Arc<Self>, root: Arc<Mount>) -> Result<Arc<MountNamespace>> {
        let base_fs = Filesystem::new(
            "rootfs",
            Default::default(),
            self.anon_dev(),
            Arc::new(EmptyFs),
            Arc::new(EmptyDir),
        );
        let base_root = base_fs.root().clone();
        let base = Mount::new(base_fs, base_root.clone(), MntFlags::RDONLY, "rootfs");
        base.ns_base
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ns = MountNamespace::new(base.clone(), self.max_mounts());
        let _g = self.namespace_lock.lock();
        self.attach_locked(&ns, &root, &base, &base_root)?;
        Ok(ns)
    }

    /// Moves from `vd` to the top of the stack of mounts on it.
    pub(crate) fn top_of(&self, vd: &VirtualDentry) -> VirtualDentry {
        let mut cur = vd.clone();
        while cur.dentry.is_mountpoint() {
            match self.mount_at(&cur.mount, &cur.dentry) {
                Some(m) => cur = VirtualDentry::root_of(&m),
                None => break,
            }
        }
        cur
    }

    fn attach_locked(
        &self,
        ns: &Arc<MountNamespace>,
        child: &Arc<Mount>,
        parent: &Arc<Mount>,
        mp: &Arc<Dentry>,
    ) -> Result<()> {
        let mut list = ns.mounts.lock();
        if list.len() >= ns.max_mounts {
            return Err(Errno::ENOSPC);
        }
        // Count first, then look for death: see `Dentry::set_dead`.
        mp.mounts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if mp.is_dead() {
            mp.mounts.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Errno::ENOENT);
        }
        self.link_locked(ns, child, parent, mp);
        list.push(child.clone());
        Ok(())
    }

    /// Hangs `child` on `mp` in `parent` (the mount table and its link),
    /// leaving the namespace's list and `mp`'s count of mounts to the caller.
    fn link_locked(
        &self,
        ns: &Arc<MountNamespace>,
        child: &Arc<Mount>,
        parent: &Arc<Mount>,
        mp: &Arc<Dentry>,
    ) {
        self.mount_table
            .write()
            .insert((parent.id(), Arc::as_ptr(mp) as usize), child.clone());
        let mut l = child.link.write();
        l.parent = Some(parent.clone());
        l.mountpoint = Some(mp.clone());
        l.ns = Arc::downgrade(ns);
        l.connected = true;
        l.umounted = false;
    }

    /// Disconnects `m` from its parent and its namespace.
    fn detach_locked(&self, ns: &Arc<MountNamespace>, m: &Arc<Mount>) {
        ns.mounts.lock().retain(|x| !Arc::ptr_eq(x, m));
        self.unhash_locked(m);
    }

    /// [`Vfs::detach_locked`] but for the namespace's list.
    fn unhash_locked(&self, m: &Arc<Mount>) {
        let mut l = m.link.write();
        if let (Some(p), Some(mp)) = (l.parent.take(), l.mountpoint.take()) {
            let key = (p.id(), Arc::as_ptr(&mp) as usize);
            let mut table = self.mount_table.write();
            if table.get(&key).is_some_and(|x| Arc::ptr_eq(x, m)) {
                table.remove(&key);
            }
            mp.mounts.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        l.connected = false;
        l.umounted = true;
    }

    /// `m` and every mount below it, parents before children.
    fn subtree(ns: &Arc<MountNamespace>, m: &Arc<Mount>) -> Vec<Arc<Mount>> {
        MountIndex::of(ns).subtree(m, &PtrSet::default())
    }

    /// Whether `fs` cannot become read-only: a mount of it in `ns` has
    /// writers, or it has open files without names (`sb_prepare_remount_readonly`).
    pub(crate) fn fs_has_writers(ns: &Arc<MountNamespace>, fs: &Arc<Filesystem>) -> bool {
        fs.ops().busy_for_readonly()
            || ns
                .mounts
                .lock()
                .iter()
                .any(|m| Arc::ptr_eq(m.fs(), fs) && m.has_writers())
            || PRIVATE_MOUNTS
                .lock()
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .any(|m| Arc::ptr_eq(m.fs(), fs) && m.has_writers())
    }

    /// The first check of every attach (`lock_mount`): a removed or
    /// detached place is gone.
    fn lock_mount(target: &VirtualDentry) -> Result<()> {
        if target.dentry.is_dead() || !target.mount.link.read().connected {
            return Err(Errno::ENOENT);
        }
        Ok(())
    }

    fn check_in_ns(ns: &Arc<MountNamespace>, m: &Arc<Mount>) -> Result<()> {
        let l = m.link.read();
        if !l.connected || l.umounted || !l.ns.upgrade().is_some_and(|x| Arc::ptr_eq(&x, ns)) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Attaches `tree` (a mount, or a tree made by a recursive bind whose
    /// members carry their parents) on top of whatever is at `target`, and
    /// propagates it.
    fn graft(
        &self,
        ns: &Arc<MountNamespace>,
        tree: MountTree,
        target: &VirtualDentry,
    ) -> Result<()> {
        let Some((top, _)) = tree.first() else {
            return Ok(());
        };
        Self::lock_mount(target)?;
        if target.dentry.is_dir() != top.root().is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Self::check_in_ns(ns, &target.mount)?;
        // `attach_recursive_mnt` first takes a mount point on the root of
        // the topmost mount stacked on the tree's root (where mounts met by
        // propagation are tucked): a removed root there is ENOENT, whether
        // it is the bind's own source or a mount a recursive bind copied on
        // top of it.
        let mut topmost = 0;
        while let Some(i) = (topmost + 1..tree.len()).find(|&i| {
            matches!(&tree[i].1, Some((p, mp)) if *p == topmost && Arc::ptr_eq(mp, tree[topmost].0.root()))
        }) {
            topmost = i;
        }
        if tree[topmost].0.root().is_dead() {
            return Err(Errno::ENOENT);
        }
        // Every peer and slave of the parent that can see the mount point
        // gets a copy. They are counted before anything is attached, so a
        // mount that would overflow the namespace leaves it as it was
        // (`count_mounts`). Mounts not attached in the namespace get none
        // (`IS_MNT_NEW`): the tree's own, which a bind of a slave made
        // slaves of the same master, and detached ones.
        let targets = self.attach_targets(ns, target);
        let adding = tree.len().saturating_mul(targets.len() + 1);
        if ns.mounts.lock().len().saturating_add(adding) > ns.max_mounts {
            return Err(Errno::ENOSPC);
        }
        if target.mount.prop.lock().shared.is_some() {
            self.share_tree(&tree);
        }
        self.attach_tree(ns, &tree, &target.mount, &target.dentry)?;
        self.propagate_copies(ns, &tree, targets, &target.dentry)
    }

    /// The peers and slaves of `at`'s mount that get a copy of what is
    /// attached at `at`: those that see its mount point and are attached in
    /// the namespace (a mount not yet attached, Linux's `IS_MNT_NEW`, gets
    /// none), with whether each is a peer and its peer group as it is now,
    /// before the attached tree is made shared (a target in that tree is
    /// not shared yet when Linux copies to it).
    fn attach_targets(&self, ns: &Arc<MountNamespace>, at: &VirtualDentry) -> Vec<Target> {
        self.propagation_targets(ns, &at.mount)
            .into_iter()
            .filter(|(pm, _)| {
                at.dentry.is_descendant_of(pm.root())
                    && Arc::ptr_eq(pm.fs(), at.mount.fs())
                    && Self::check_in_ns(ns, pm).is_ok()
            })
            .map(|(pm, is_peer)| {
                let group = pm.prop.lock().shared;
                (pm, is_peer, group)
            })
            .collect()
    }

    /// Gives every mount of `tree` that has no peer group a new one: a tree
    /// attached in a shared mount becomes shared.
    fn share_tree(&self, tree: &MountTree) {
        for (m, _) in tree {
            let mut p = m.prop.lock();
            if p.shared.is_none() {
                p.shared = Some(
                    self.next_group_id
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                );
            }
        }
    }

    /// Mounts a copy of `tree` (attached at `mp` in a shared or master
    /// mount) at `mp` in each of that mount's peers and slaves, `targets`
    /// (`propagate_mnt`): a peer's copy joins the tree's peer group, a
    /// slave's becomes a slave of it.
    fn propagate_copies(
        &self,
        ns: &Arc<MountNamespace>,
        tree: &MountTree,
        targets: Vec<Target>,
        mp: &Arc<Dentry>,
    ) -> Result<()> {
        // A slave that is shared itself gives its copies a peer group of
        // their own, which the copies at its peers join (`propagate_one`:
        // `CL_SLAVE | CL_MAKE_SHARED`, then `CL_MAKE_SHARED` from that copy).
        let mut slave_groups: HashMap<(u32, usize), u32> = HashMap::new();
        for (pm, is_peer, pm_group) in targets {
            let copies: MountTree = tree
                .iter()
                .enumerate()
                .map(|(i, (m, link))| {
                    let c = Mount::new(m.fs().clone(), m.root().clone(), m.flags(), m.source());
                    {
                        let src = m.prop.lock();
                        let mut p = c.prop.lock();
                        if is_peer {
                            p.shared = src.shared;
                        } else {
                            p.master = Some(Arc::downgrade(m));
                            p.shared = pm_group.map(|g| {
                                *slave_groups.entry((g, i)).or_insert_with(|| {
                                    self.next_group_id
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                                })
                            });
                        }
                    }
                    if !is_peer {
                        m.prop.lock().slaves.push(Arc::downgrade(&c));
                    }
                    (c, link.clone())
                })
                .collect();
            // The copy goes right on the mount point; whatever was mounted
            // there is tucked on top of the copy (`attach_recursive_mnt`).
            let covered = self.mount_at(&pm, mp);
            self.attach_tree(ns, &copies, &pm, mp)?;
            if let (Some(q), Some((copy, _))) = (covered, copies.first()) {
                let top = self.top_of(&VirtualDentry::root_of(copy));
                self.change_mountpoint(&q, &top.mount, &top.dentry);
            }
        }
        Ok(())
    }

    /// Moves `q` (and what is mounted on it) onto `mp` in `parent`, keeping
    /// its place in the namespace's list (`mnt_change_mountpoint`).
    fn change_mountpoint(&self, q: &Arc<Mount>, parent: &Arc<Mount>, mp: &Arc<Dentry>) {
        let mut table = self.mount_table.write();
        let mut l = q.link.write();
        if let (Some(p), Some(old)) = (l.parent.take(), l.mountpoint.take()) {
            let key = (p.id(), Arc::as_ptr(&old) as usize);
            if table.get(&key).is_some_and(|x| Arc::ptr_eq(x, q)) {
                table.remove(&key);
            }
            old.mounts.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        mp.mounts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        table.insert((parent.id(), Arc::as_ptr(mp) as usize), q.clone());
        l.parent = Some(parent.clone());
        l.mountpoint = Some(mp.clone());
    }

    fn attach_tree(
        &self,
        ns: &Arc<MountNamespace>,
        tree: &MountTree,
        parent: &Arc<Mount>,
        mp: &Arc<Dentry>,
    ) -> Result<()> {
        for (i, (m, link)) in tree.iter().enumerate() {
            match link {
                None if i == 0 => self.attach_locked(ns, m, parent, mp)?,
                Some((pi, d)) => {
                    let p = tree[*pi].0.clone();
                    self.attach_locked(ns, m, &p, d)?
                }
                None => {}
            }
        }
        Ok(())
    }

    /// `mount(2)` of a new filesystem at `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn do_new_mount(
        self: &Arc<Self>,
        ns: &Arc<MountNamespace>,
        cred: &Credentials,
        target: &VirtualDentry,
        fstype: &str,
        source: &[u8],
        flags: MountFlags,
        data: &[u8],
        at: Option<PathBase<'_>>,
    ) -> Result<()> {
        let fs = self.new_filesystem(cred, fstype, source, flags, data, false, at)?;
        let root = fs.root().clone();
        let m = Mount::new(
            fs,
            root,
            MntFlags::from_mount_flags(flags),
            &String::from_utf8_lossy(source),
        );
        let _g = self.namespace_lock.lock();
        let at = self.top_of(target);
        self.graft(ns, vec![(m, None)], &at)
    }

    /// Attaches an unattached mount at `target` (on top of anything there).
    pub fn connect_mount_at(
        &self,
        ns: &Arc<MountNamespace>,
        m: &Arc<Mount>,
        target: &VirtualDentry,
    ) -> Result<()> {
        let _g = self.namespace_lock.lock();
        let at = self.top_of(target);
        if Arc::ptr_eq(&at.mount, m) {
            return Err(Errno::EBUSY);
        }
        self.graft(ns, vec![(m.clone(), None)], &at)
    }

    /// `MS_BIND` (and `MS_REC`): shows `source` at `target` too.
    pub fn do_bind(
        &self,
        ns: &Arc<MountNamespace>,
        source: &VirtualDentry,
        target: &VirtualDentry,
        recursive: bool,
    ) -> Result<()> {
        let _g = self.namespace_lock.lock();
        let at = self.top_of(target);
        Self::lock_mount(&at)?;
        Self::check_in_ns(ns, &source.mount)?;
        if source.mount.prop.lock().unbindable {
            return Err(Errno::EINVAL);
        }
        let clone_one = |m: &Arc<Mount>, root: &Arc<Dentry>| {
            let c = Mount::new(m.fs().clone(), root.clone(), m.flags(), m.source());
            {
                let src = m.prop.lock();
                let mut p = c.prop.lock();
                p.shared = src.shared;
                p.master = src.master.clone();
            }
            let master = c.prop.lock().master.as_ref().and_then(|w| w.upgrade());
            if let Some(mm) = master {
                mm.prop.lock().slaves.push(Arc::downgrade(&c));
            }
            c
        };
        let mut tree = vec![(clone_one(&source.mount, &source.dentry), None)];
        if recursive {
            let mut map: HashMap<u64, usize> = HashMap::new();
            map.insert(source.mount.id(), 0);
            for m in Self::subtree(ns, &source.mount).into_iter().skip(1) {
                let Some((p, mp)) = m.parent() else { continue };
                let Some(&pi) = map.get(&p.id()) else {
                    continue;
                };
                if Arc::ptr_eq(&p, &source.mount) && !mp.is_descendant_of(&source.dentry) {
                    continue;
                }
                if m.prop.lock().unbindable {
                    continue;
                }
                let c = clone_one(&m, m.root());
                map.insert(m.id(), tree.len());
                tree.push((c, Some((pi, mp))));
            }
        }
        self.graft(ns, tree, &at)
    }

    /// `MS_REMOUNT`: new per-mount flags, and with `!bind_only` new
    /// filesystem options. `vd` must be a mount root.
    pub fn do_remount(
        &self,
        ns: &Arc<MountNamespace>,
        vd: &VirtualDentry,
        flags: MountFlags,
        data: &[u8],
        bind_only: bool,
    ) -> Result<()> {
        let _g = self.namespace_lock.lock();
        Self::check_in_ns(ns, &vd.mount)?;
        if !vd.is_mount_root() {
            return Err(Errno::EINVAL);
        }
        let f = MntFlags::from_mount_flags(flags);
        if !bind_only {
            let mut md = MountData::parse(data)?;
            let ro = md
                .take_sb_flags(true)?
                .unwrap_or(f.contains(MntFlags::RDONLY));
            if ro && !vd.mount.fs().is_readonly() {
                // Going read-only needs no writers on any mount of the filesystem.
                if Self::fs_has_writers(ns, vd.mount.fs()) {
                    return Err(Errno::EBUSY);
                }
            }
            if !ro && vd.mount.fs().ops().refuses_rw_remount() {
                return Err(Errno::EROFS);
            }
            vd.mount.fs().ops().remount(&md)?;
            vd.mount
                .fs()
                .set_readonly(ro || vd.mount.fs().ops().is_readonly());
        }
        vd.mount.set_readonly(f.contains(MntFlags::RDONLY))?;
        vd.mount.set_other_flags(f);
        Ok(())
    }

    /// A propagation change (`MS_SHARED`, `MS_PRIVATE`, `MS_SLAVE`, `MS_UNBINDABLE`, with `MS_REC`).
    pub fn do_change_type(
        &self,
        ns: &Arc<MountNamespace>,
        vd: &VirtualDentry,
        flags: MountFlags,
    ) -> Result<()> {
        let t = PropagationType::from_flags(flags).ok_or(Errno::EINVAL)?;
        let _g = self.namespace_lock.lock();
        Self::check_in_ns(ns, &vd.mount)?;
        if !vd.is_mount_root() {
            return Err(Errno::EINVAL);
        }
        let targets = if flags.contains(MountFlags::MS_REC) {
            Self::subtree(ns, &vd.mount)
        } else {
            vec![vd.mount.clone()]
        };
        for m in targets {
            self.change_type(ns, &m, t);
        }
        Ok(())
    }

    /// `MS_MOVE`: moves the mount at `source` (a mount root) to `target`.
    pub fn do_move(
        &self,
        ns: &Arc<MountNamespace>,
        source: &VirtualDentry,
        target: &VirtualDentry,
    ) -> Result<()> {
        let _g = self.namespace_lock.lock();
        let m = source.mount.clone();
        // Linux 6.18's `do_move_mount`: the source must be a mount root and
        // the types must match (EINVAL, not graft's ENOTDIR), then the
        // target is locked, so a detached target is ENOENT before anything
        // else about the source is checked.
        if !source.is_mount_root() || target.dentry.is_dir() != m.root().is_dir() {
            return Err(Errno::EINVAL);
        }
        let at = self.top_of(target);
        Self::lock_mount(&at)?;
        Self::check_in_ns(ns, &m)?;
        if m.parent().is_none() {
            return Err(Errno::EINVAL);
        }
        Self::check_in_ns(ns, &at.mount)?;
        if let Some((p, _)) = m.parent() {
            if p.prop.lock().shared.is_some() {
                return Err(Errno::EINVAL);
            }
        }
        let subtree = Self::subtree(ns, &m);
        // A tree holding an unbindable mount cannot go into a shared mount,
        // which would propagate it.
        let dest_shared = at.mount.prop.lock().shared.is_some();
        if dest_shared && subtree.iter().any(|x| x.prop.lock().unbindable) {
            return Err(Errno::EINVAL);
        }
        // Moving a mount beneath itself.
        let mut cur = Some(at.mount.clone());
        while let Some(c) = cur {
            if Arc::ptr_eq(&c, &m) {
                return Err(Errno::ELOOP);
            }
            cur = c.parent().map(|(p, _)| p);
        }
        // As for a bind (see `graft`): the root of the topmost mount
        // stacked on the moved one must not have been removed.
        if self.top_of(&VirtualDentry::root_of(&m)).dentry.is_dead() {
            return Err(Errno::ENOENT);
        }
        // The moved tree propagates as a bind does (`attach_recursive_mnt`
        // with a mount that has a parent): the peers and slaves of the
        // destination get copies, listed before the tree moves, so that a
        // peer of the destination that is itself being moved gets one too.
        let targets = self.attach_targets(ns, &at);
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut tree: MountTree = Vec::with_capacity(subtree.len());
        for x in &subtree {
            let link = if Arc::ptr_eq(x, &m) {
                None
            } else {
                x.parent()
                    .and_then(|(p, mp)| index.get(&p.id()).map(|&pi| (pi, mp)))
            };
            index.insert(x.id(), tree.len());
            tree.push((x.clone(), link));
        }
        if dest_shared {
            self.share_tree(&tree);
        }
        self.detach_locked(ns, &m);
        let res = self.attach_locked(ns, &m, &at.mount, &at.dentry);
        // Keep the moved subtree after its new root in the listing order.
        {
            let mut list = ns.mounts.lock();
            list.retain(|x| !subtree.iter().skip(1).any(|s| Arc::ptr_eq(s, x)));
            list.extend(subtree.into_iter().skip(1));
        }
        res?;
        self.propagate_copies(ns, &tree, targets, &at.dentry)
    }

    /// `umount2(2)` of the mount whose root is `vd`. `extra_refs` is how many
    /// references the caller itself holds on the mount (for the busy check).
    pub fn do_umount(
        &self,
        ns: &Arc<MountNamespace>,
        vd: &VirtualDentry,
        flags: UmountFlags,
        extra_refs: usize,
    ) -> Result<()> {
        let _g = self.namespace_lock.lock();
        let m = vd.mount.clone();
        if !vd.is_mount_root() {
            return Err(Errno::EINVAL);
        }
        Self::check_in_ns(ns, &m)?;
        if m.parent().is_none() {
            return Err(Errno::EINVAL);
        }
        if !flags.contains(UmountFlags::MNT_DETACH) {
            let busy = ns
                .mounts
                .lock()
                .iter()
                .any(|c| c.parent().is_some_and(|(p, _)| Arc::ptr_eq(&p, &m)));
            if busy {
                return Err(Errno::EBUSY);
            }
            // The namespace list, the mount table, `m` here and the caller's own.
            if Arc::strong_count(&m) > 3 + extra_refs {
                return Err(Errno::EBUSY);
            }
        }
        // MNT_EXPIRE: the first call only marks an idle mount.
        if flags.contains(UmountFlags::MNT_EXPIRE) && !m.mark_expiry() {
            return Err(Errno::EAGAIN);
        }
        // The copies at the peers are looked at under the namespace lock,
        // after the expiry mark.
        let mut parent_targets = if flags.contains(UmountFlags::MNT_DETACH) {
            None
        } else {
            Some(self.propagated_busy(ns, &m)?)
        };
        // Propagated unmounts (`propagate_umount`): for every mount the call
        // takes away (with MNT_DETACH, the whole tree below `m`), the copies
        // at its parent's peers and slaves, when each has no children of
        // its own left, or only one that covers its root (a mount tucked on
        // top of the copy: that one takes the copy's place). The tree is
        // read children first, so a copy whose children are copies going
        // too goes as well.
        let mut victims = Vec::new();
        // One index for every copy: a copy per peer, each asked for its
        // children, must not cost a scan of the namespace each.
        let mut index = MountIndex::of(ns);
        let taken = if flags.contains(UmountFlags::MNT_DETACH) {
            index.subtree(&m, &PtrSet::default())
        } else {
            vec![m.clone()]
        };
        let mut leaving: PtrSet = taken.iter().map(|x| Arc::as_ptr(x) as usize).collect();
        // The mounts a parent propagates to are the same for every member
        // of its peer group (itself included): listed once a group, and
        // skipped at once when all of them are going anyway, so taking down
        // a tree of many peers (mount-doubling) stays linear.
        let mut groups: HashMap<u64, (Vec<Arc<Mount>>, bool)> = HashMap::new();
        let mut seen: HashSet<(u64, usize)> = HashSet::new();
        // Copies looked at and kept because mounts below them stay.
        let mut held: HashMap<usize, Arc<Mount>> = HashMap::new();
        // A copy can go when every mount on it goes, except one tucked on
        // its root, which takes its place.
        let removable = |index: &MountIndex, leaving: &PtrSet, c: &Arc<Mount>| {
            index.children(c).iter().all(|ch| {
                leaving.contains(&(Arc::as_ptr(ch) as usize))
                    || ch.parent().is_some_and(|(_, d)| Arc::ptr_eq(&d, c.root()))
            })
        };
        for x in taken.iter().rev() {
            let Some((px, mpx)) = x.parent() else {
                continue;
            };
            let key = match px.prop.lock().shared {
                Some(g) => u64::from(g),
                None => u64::MAX - px.id(),
            };
            // Every mount of one group at one mount point has the same
            // copies to look at: once.
            if !seen.insert((key, Arc::as_ptr(&mpx) as usize)) {
                continue;
            }
            let (set, all_leaving) = groups.entry(key).or_insert_with(|| {
                // Without MNT_DETACH, `m` alone goes, and the busy check
                // listed its parent's targets already.
                let targets = parent_targets
                    .take()
                    .unwrap_or_else(|| self.propagation_targets(ns, &px));
                let mut set: Vec<Arc<Mount>> = targets.into_iter().map(|(pm, _)| pm).collect();
                set.push(px.clone());
                let all = set
                    .iter()
                    .all(|pm| leaving.contains(&(Arc::as_ptr(pm) as usize)));
                (set, all)
            });
            // A mount going takes what is mounted in it along, except what
            // covers its root, which takes its place: copies on the roots
            // are looked at even then.
            if *all_leaving && !set.iter().any(|pm| Arc::ptr_eq(&mpx, pm.root())) {
                continue;
            }
            for pm in set.iter() {
                let Some(c) = self.mount_at(pm, &mpx) else {
                    continue;
                };
                if leaving.contains(&(Arc::as_ptr(&c) as usize)) {
                    continue;
                }
                if !removable(&index, &leaving, &c) {
                    held.insert(Arc::as_ptr(&c) as usize, c);
                    continue;
                }
                leaving.insert(Arc::as_ptr(&c) as usize);
                // A copy held back only by its children goes once they all
                // go (Linux looks at the parent again while it makes
                // progress), and so on up.
                let mut up = c.parent();
                victims.push(c);
                while let Some((p, _)) = up {
                    let key = Arc::as_ptr(&p) as usize;
                    if !held.contains_key(&key) || !removable(&index, &leaving, &p) {
                        break;
                    }
                    held.remove(&key);
                    leaving.insert(key);
                    up = p.parent();
                    victims.push(p);
                }
            }
        }
        // One tree after the other, as Linux does; the index follows the
        // covers that move, and the unmounted mounts leave the namespace's
        // list together, in one pass, at the end.
        let mut gone = PtrSet::default();
        for c in victims {
            self.umount_tree_of(ns, &c, &mut index, &mut gone);
        }
        self.umount_tree_of(ns, &m, &mut index, &mut gone);
        ns.mounts
            .lock()
            .retain(|x| !gone.contains(&(Arc::as_ptr(x) as usize)));
        Ok(())
    }

    /// `propagate_mount_busy`: the mount at `m`'s place at each peer and
    /// slave of its parent, which an unmount of `m` would take too, must be
    /// idle (unless other mounts sit on it, which keeps it): `EBUSY`.
    /// Answers the parent's propagation targets, which the unmount then
    /// uses too.
    fn propagated_busy(
        &self,
        ns: &Arc<MountNamespace>,
        m: &Arc<Mount>,
    ) -> Result<Vec<(Arc<Mount>, bool)>> {
        let Some((parent, mp)) = m.parent() else {
            return Ok(Vec::new());
        };
        let targets = self.propagation_targets(ns, &parent);
        for (pm, _) in &targets {
            let Some(c) = self.mount_at(pm, &mp) else {
                continue;
            };
            let kids = ns
                .mounts
                .lock()
                .iter()
                .filter(|x| x.parent().is_some_and(|(p, _)| Arc::ptr_eq(&p, &c)))
                .count();
            let topper = self.mount_at(&c, c.root()).is_some();
            if kids > usize::from(topper) {
                continue;
            }
            // The namespace list, the mount table, `c` here, the topper's
            // link to it, this list of targets and `parent` (a copy can be
            // the parent itself: a mount moved onto its own peer).
            let listed = targets.iter().filter(|(x, _)| Arc::ptr_eq(x, &c)).count();
            let ours = usize::from(topper) + listed + usize::from(Arc::ptr_eq(&c, &parent));
            if Arc::strong_count(&c) > 3 + ours {
                return Err(Errno::EBUSY);
            }
        }
        Ok(targets)
    }

    /// Unmounts `m` and every mount below it (`umount_tree`), leaving them
    /// on the namespace's list (the caller takes the `gone` ones off): the
    /// mounts still listed meanwhile are the ones not yet made private, as
    /// `umount_tree` leaves them linked in their peer groups.
    fn umount_tree_of(
        &self,
        ns: &Arc<MountNamespace>,
        m: &Arc<Mount>,
        index: &mut MountIndex,
        gone: &mut PtrSet,
    ) {
        if gone.contains(&(Arc::as_ptr(m) as usize)) {
            return;
        }
        let tree = index.subtree(m, gone);
        // A mount stacked on the root of `m` is re-parented onto `m`'s place,
        // with everything mounted on it.
        let cover = self.mount_at(m, m.root());
        let kept: PtrSet = cover
            .as_ref()
            .map(|c| index.subtree(c, gone))
            .unwrap_or_default()
            .iter()
            .map(|k| Arc::as_ptr(k) as usize)
            .collect();
        let place = m.parent();
        for x in tree.iter().rev() {
            if kept.contains(&(Arc::as_ptr(x) as usize)) {
                continue;
            }
            self.unhash_locked(x);
            gone.insert(Arc::as_ptr(x) as usize);
            self.change_type(ns, x, PropagationType::Private);
        }
        if let (Some(c), Some((p, mp))) = (cover, place) {
            // The cover takes `m`'s place and keeps its own in the list
            // (`reparent` through `mnt_change_mountpoint`).
            self.change_mountpoint(&c, &p, &mp);
            index.moved(&c, m, &p);
        }
    }

    /// `pivot_root(2)`: `root` is the caller's root. Returns the new root;
    /// the caller moves its root and working directory from the old one.
    pub fn do_pivot_root(
        &self,
        ns: &Arc<MountNamespace>,
        root: &VirtualDentry,
        new_root: &VirtualDentry,
        put_old: &VirtualDentry,
    ) -> Result<VirtualDentry> {
        let _g = self.namespace_lock.lock();
        let old = self.top_of(put_old);
        Self::lock_mount(&old)?;
        let new_mnt = new_root.mount.clone();
        let root_mnt = root.mount.clone();
        let shared =
            |m: &Option<Arc<Mount>>| m.as_ref().is_some_and(|m| m.prop.lock().shared.is_some());
        if old.mount.prop.lock().shared.is_some()
            || shared(&new_mnt.parent().map(|x| x.0))
            || shared(&root_mnt.parent().map(|x| x.0))
        {
            return Err(Errno::EINVAL);
        }
        Self::check_in_ns(ns, &root_mnt)?;
        Self::check_in_ns(ns, &new_mnt)?;
        if new_root.dentry.is_dead() {
            return Err(Errno::ENOENT);
        }
        if Arc::ptr_eq(&new_mnt, &root_mnt) || Arc::ptr_eq(&old.mount, &root_mnt) {
            return Err(Errno::EBUSY);
        }
        if !root.is_mount_root() || root_mnt.parent().is_none() {
            return Err(Errno::EINVAL);
        }
        if !new_root.is_mount_root() || new_mnt.parent().is_none() {
            return Err(Errno::EINVAL);
        }
        if !is_reachable(&old, new_root) || !is_reachable(new_root, root) {
            return Err(Errno::EINVAL);
        }
        let Some((root_parent, root_mp)) = root_mnt.parent() else {
            return Err(Errno::EINVAL);
        };
        // The list keeps its order: pivot_root moves no mount in it.
        let order: Vec<Arc<Mount>> = ns.mounts.lock().clone();
        self.detach_locked(ns, &new_mnt);
        self.detach_locked(ns, &root_mnt);
        self.attach_locked(ns, &root_mnt, &old.mount, &old.dentry)?;
        self.attach_locked(ns, &new_mnt, &root_parent, &root_mp)?;
        *ns.mounts.lock() = order;
        Ok(VirtualDentry::root_of(&new_mnt))
    }
}

/// Whether `vd` is at or below `root` in the mount tree (`is_path_reachable`).
pub fn is_reachable(vd: &VirtualDentry, root: &VirtualDentry) -> bool {
    let mut cur = vd.clone();
    loop {
        if Arc::ptr_eq(&cur.mount, &root.mount) {
            return cur.dentry.is_descendant_of(&root.dentry);
        }
        match cur.mount.parent() {
            Some((p, mp)) => cur = VirtualDentry::new(p, mp),
            None => return false,
        }
    }
}

/// The filesystem under a namespace's root: one empty read-only directory.
struct EmptyFs;

impl crate::inode::FilesystemOps for EmptyFs {
    fn statfs(&self) -> Result<Statfs> {
        Ok(Statfs {
            namelen: NAME_MAX as u64,
            bsize: 4096,
            ..Default::default()
        })
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct EmptyDir;

impl crate::inode::Inode for EmptyDir {
    fn file_type(&self) -> FileType {
        FileType::Directory
    }
    fn owner(&self) -> crate::perm::Owner {
        crate::perm::Owner {
            mode: S_IFDIR | 0o755,
            uid: 0,
            gid: 0,
        }
    }
    fn stat(&self) -> Statx {
        Statx {
            mask: StatxMask::BASIC_STATS,
            mode: S_IFDIR | 0o755,
            nlink: 2,
            ino: 1,
            blksize: 4096,
            ..Default::default()
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The mounts of a namespace by parent, in the namespace's order: built in
/// one pass, so walking a subtree or asking for children costs what they
/// hold, not a scan of the namespace (which may hold `mount-max` mounts).
struct MountIndex {
    children: HashMap<usize, Vec<Arc<Mount>>, BuildHasherDefault<NameHasher>>,
}

impl MountIndex {
    fn of(ns: &Arc<MountNamespace>) -> MountIndex {
        let mut children: HashMap<usize, Vec<Arc<Mount>>, BuildHasherDefault<NameHasher>> =
            HashMap::default();
        for c in ns.mounts.lock().iter() {
            if let Some((p, _)) = c.parent() {
                children
                    .entry(Arc::as_ptr(&p) as usize)
                    .or_default()
                    .push(c.clone());
            }
        }
        MountIndex { children }
    }

    /// The mounts whose parent is `m`, in the namespace's order.
    fn children(&self, m: &Arc<Mount>) -> &[Arc<Mount>] {
        self.children
            .get(&(Arc::as_ptr(m) as usize))
            .map_or(&[], |v| v.as_slice())
    }

    /// `m` and every mount below it but those `gone`, parents before
    /// children (each level in the namespace's order).
    fn subtree(&self, m: &Arc<Mount>, gone: &PtrSet) -> Vec<Arc<Mount>> {
        let mut out = vec![m.clone()];
        let mut i = 0;
        while i < out.len() {
            let below: Vec<Arc<Mount>> = self
                .children(&out[i])
                .iter()
                .filter(|c| !gone.contains(&(Arc::as_ptr(c) as usize)))
                .cloned()
                .collect();
            out.extend(below);
            i += 1;
        }
        out
    }

    /// `c` moved from under `from` to the end of `to`'s mounts.
    fn moved(&mut self, c: &Arc<Mount>, from: &Arc<Mount>, to: &Arc<Mount>) {
        if let Some(v) = self.children.get_mut(&(Arc::as_ptr(from) as usize)) {
            v.retain(|x| !Arc::ptr_eq(x, c));
        }
        self.children
            .entry(Arc::as_ptr(to) as usize)
            .or_default()
            .push(c.clone());
    }
}

/// A set of mounts by address (hashed as the mount table's keys are).
type PtrSet = HashSet<usize, BuildHasherDefault<NameHasher>>;
