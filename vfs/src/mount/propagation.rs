//! Mount propagation (`fs/pnode.c`): shared peer groups, slaves and
//! unbindable mounts, and the copies a mount or unmount event makes.
//!
//! Everything here runs under `Vfs::namespace_lock`.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use crate::abi::*;
use crate::mount::{Mount, MountNamespace};
use crate::Vfs;

/// A propagation type change asked by `mount(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropagationType {
    /// `MS_SHARED`.
    Shared,
    /// `MS_PRIVATE`.
    Private,
    /// `MS_SLAVE`.
    Slave,
    /// `MS_UNBINDABLE`.
    Unbindable,
}

impl PropagationType {
    /// Decodes the flags of a propagation change: exactly one type, and only
    /// `MS_REC` and `MS_SILENT` beside it, else `None` (`EINVAL`).
    pub fn from_flags(f: MountFlags) -> Option<PropagationType> {
        let rest = f - MountFlags::MS_REC - MountFlags::MS_SILENT;
        Some(match rest {
            x if x == MountFlags::MS_SHARED => PropagationType::Shared,
            x if x == MountFlags::MS_PRIVATE => PropagationType::Private,
            x if x == MountFlags::MS_SLAVE => PropagationType::Slave,
            x if x == MountFlags::MS_UNBINDABLE => PropagationType::Unbindable,
            _ => return None,
        })
    }
}

impl Vfs {
    /// Every live mount sharing peer group `g`.
    pub(crate) fn peers_of(&self, ns_list: &[Arc<MountNamespace>], g: u32) -> Vec<Arc<Mount>> {
        let mut out = Vec::new();
        for ns in ns_list {
            for m in ns.mounts.lock().iter() {
                if m.prop.lock().shared == Some(g) {
                    out.push(m.clone());
                }
            }
        }
        out
    }

    /// The first live mount of `ns` in peer group `g` other than `except`.
    fn first_peer(
        &self,
        ns: &Arc<MountNamespace>,
        g: u32,
        except: &Arc<Mount>,
    ) -> Option<Arc<Mount>> {
        ns.mounts
            .lock()
            .iter()
            .find(|x| !Arc::ptr_eq(x, except) && x.prop.lock().shared == Some(g))
            .cloned()
    }

    /// Changes the propagation type of one mount.
    pub(crate) fn change_type(&self, ns: &Arc<MountNamespace>, m: &Arc<Mount>, t: PropagationType) {
        match t {
            PropagationType::Shared => {
                let mut p = m.prop.lock();
                if p.shared.is_none() {
                    p.shared = Some(
                        self.next_group_id
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    );
                }
                p.unbindable = false;
            }
            PropagationType::Slave | PropagationType::Private | PropagationType::Unbindable => {
                self.make_slave(ns, m, t == PropagationType::Slave);
                let mut p = m.prop.lock();
                // MS_SLAVE leaves an unbindable mount unbindable
                // (`change_mnt_propagation` touches the flag only otherwise).
                if t != PropagationType::Slave {
                    p.master = None;
                    p.unbindable = t == PropagationType::Unbindable;
                }
            }
        }
    }

    /// Leaves the peer group, becoming a slave of it (`do_make_slave`): our
    /// slaves move to a remaining peer, or to our master.
    fn make_slave(&self, ns: &Arc<MountNamespace>, m: &Arc<Mount>, keep_master: bool) {
        let (group, slaves, master) = {
            let mut p = m.prop.lock();
            (
                p.shared.take(),
                std::mem::take(&mut p.slaves),
                p.master.clone(),
            )
        };
        // A remaining peer takes our slaves, or us as a slave: looked for
        // only then, and the first one found will do (a scan of the
        // namespace for each of the thousands of mounts an unmount makes
        // private would be quadratic).
        let peer = group
            .filter(|_| keep_master || !slaves.is_empty())
            .and_then(|g| self.first_peer(ns, g, m));
        let new_master: Option<Arc<Mount>> = peer
            .clone()
            .or_else(|| master.as_ref().and_then(Weak::upgrade));
        for s in slaves.iter().filter_map(Weak::upgrade) {
            s.prop.lock().master = new_master.as_ref().map(Arc::downgrade);
            if let Some(nm) = &new_master {
                nm.prop.lock().slaves.push(Arc::downgrade(&s));
            }
        }
        if !keep_master {
            // Private or unbindable: no master, and no master lists us.
            if let Some(old) = master.as_ref().and_then(Weak::upgrade) {
                old.prop
                    .lock()
                    .slaves
                    .retain(|w| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(m)));
            }
            return;
        }
        let new_master = peer.or_else(|| master.as_ref().and_then(Weak::upgrade));
        if let Some(nm) = new_master {
            if Arc::ptr_eq(&nm, m) {
                return;
            }
            m.prop.lock().master = Some(Arc::downgrade(&nm));
            let mut np = nm.prop.lock();
            if !np
                .slaves
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(m)))
            {
                np.slaves.push(Arc::downgrade(m));
            }
        }
    }

    /// The mounts an event at `parent` propagates to, with whether each is a
    /// peer (true) or a slave (false), excluding `parent` itself.
    pub(crate) fn propagation_targets(
        &self,
        ns: &Arc<MountNamespace>,
        parent: &Arc<Mount>,
    ) -> Vec<(Arc<Mount>, bool)> {
        let mut out: Vec<(Arc<Mount>, bool)> = Vec::new();
        let mut queue: Vec<(Arc<Mount>, bool)> = vec![(parent.clone(), true)];
        let mut seen: HashSet<u64> = HashSet::from([parent.id()]);
        while let Some((m, is_peer)) = queue.pop() {
            let (group, slaves) = {
                let p = m.prop.lock();
                (p.shared, p.slaves.clone())
            };
            let mut members = vec![(m.clone(), is_peer)];
            if let Some(g) = group {
                for peer in self.peers_of(std::slice::from_ref(ns), g) {
                    if seen.insert(peer.id()) {
                        out.push((peer.clone(), is_peer));
                        members.push((peer, is_peer));
                    }
                }
            }
            for (member, _) in members {
                let ss = if Arc::ptr_eq(&member, &m) {
                    slaves.clone()
                } else {
                    member.prop.lock().slaves.clone()
                };
                for s in ss.iter().filter_map(Weak::upgrade) {
                    if seen.insert(s.id()) {
                        out.push((s.clone(), false));
                        queue.push((s, false));
                    }
                }
            }
        }
        out
    }
}
