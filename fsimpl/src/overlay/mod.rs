//! The `overlay` filesystem type: a union of directory trees, as Linux's
//! overlayfs presents it (without `redirect_dir`, `index`, `metacopy`,
//! `xino` or `nfs_export`).
//!
//! # Mounting
//!
//! ```text
//! mount -t overlay none /m -o lowerdir=/l1:/l2[::/data],upperdir=/u,workdir=/w
//! ```
//!
//! `lowerdir=` lists read-only layers, top first, separated by `:` (`\:`
//! escapes one); layers after `::` (or given with `datadir+=`) are
//! data-only, which without `metacopy` means they are never read;
//! `lowerdir+=` adds one layer. Without `upperdir=` the overlay is read-only and needs at least two
//! layers; with it, `workdir=` must name an empty-able directory on the same
//! mount, outside the upper tree. At mount time each layer's mount is cloned
//! privately (so later mounts on the layers are not seen), `workdir/work` is
//! made afresh (mode 0, anything there before removed), and layers that
//! overlap are refused with `ELOOP`, in Linux's order of checks. When the
//! mounter cannot make the work directory the overlay is mounted read-only
//! (its upper layer still shown), as Linux does; when it can make it but
//! not write in it, the mount fails. A `volatile` mount marks the work
//! directory (`work/incompat/volatile/dirty`), which later mounts refuse
//! with `EINVAL`. `userxattr` keeps the overlay's own attributes under
//! `user.overlay.` instead of `trusted.overlay.`. A remount ignores every
//! option (as Linux's `mount(2)` remount of an overlay does), and one asking
//! for read-write of a read-only overlay is `EROFS`.
//!
//! # Layers
//!
//! A name is looked up in the upper layer, then in each lower layer. A
//! character device 0:0 (a *whiteout*) hides the name below it; a directory
//! whose `trusted.overlay.opaque` is `y` hides the directories below it; a
//! directory found in several layers is *merged* (its listing is the union,
//! without whiteouts); a non-directory hides everything below it.
//!
//! A change to something that exists only below first *copies it up*: its
//! parents, then itself (data, mode, owner, times and extended attributes)
//! are made in the upper layer. The copy is built under a temporary name in
//! the work directory and renamed into place, so a reader never sees half a
//! copy and two racing copies cannot both win. Removing a name that exists
//! below leaves a whiteout (a hard link to one shared whiteout kept in the
//! work directory, as Linux does; a rename leaves a whiteout of its own); a
//! directory made over a whiteout is marked opaque. A directory that exists
//! below cannot be renamed (`EXDEV`, as Linux without `redirect_dir`).
//! Whether a whiteout is needed is decided by the name in the parent's
//! lower layers. An open file follows its inode up: the first use after a
//! copy-up reopens it on the upper file. Names `trusted.overlay.*` given
//! through the overlay are kept one level down in the layers
//! (`trusted.overlay.overlay.*`), so the overlay's own marks are neither
//! shown nor forged.
//!
//! Layers are reached through the VFS's path operations on the private
//! clones, with the mounter's credentials (Linux's credential override);
//! the caller's own permission is checked by the VFS against the overlay
//! inode, whose attributes are those of the real inode it shows.
//!
//! # Not implemented
//!
//! `redirect_dir`, `metacopy`, `xino`, `nfs_export` and `verity` are
//! accepted with Linux's values but change nothing (this overlay behaves as
//! with all of them off); `index=on` makes and marks `workdir/index` and
//! keeps temporary entries and whiteouts there, but indexes nothing (no
//! hard-link or file-handle index, no check that the layers are the ones
//! indexed before, no `EBUSY` for layers in use); `trusted.overlay.origin` holds
//! Tessera's own bytes, not a Linux file handle; hard links to a lower file
//! are broken by copy-up, as Linux without `index`.
//!
//! # Locking
//!
//! Each overlay inode keeps its layers (upper, lowers, parent link) behind
//! one mutex, which is only held to copy them in or out: no lock of this
//! module is held across a call into a layer. Copy-up needs no lock because
//! it ends in one `RENAME_NOREPLACE` into place: a loser finds the winner's
//! copy and adopts it. An open directory's merged listing is cached behind
//! a mutex of the open file, filled before it is taken.

mod node;

pub use node::{OverlayFs, OverlayInode};

use tessera_vfs::abi::*;
use tessera_vfs::fstype::{FilesystemType, FsTypeOptions, MountRequest, NewFilesystem};

/// The `overlay` filesystem type.
#[derive(Default)]
pub struct OverlayType;

impl FilesystemType for OverlayType {
    fn name(&self) -> &str {
        "overlay"
    }

    fn options(&self) -> FsTypeOptions {
        FsTypeOptions {
            allow_user_mount: true,
            allow_user_list: true,
            nodev: true,
        }
    }

    fn mount(&self, req: &MountRequest<'_>) -> Result<NewFilesystem> {
        node::mount(req)
    }
}
