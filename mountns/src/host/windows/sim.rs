//! An in-memory Windows host, for running the Windows backend on any
//! platform.
//!
//! [`SimHost`] models what the backend touches: directories, files,
//! directory symbolic links, volume mount points, alternate data streams,
//! layer folders with their activation and preparation, and the volumes that
//! prepared layers expose. It checks the preconditions the real calls check
//! (a volume mount point must be an empty directory and both paths must end
//! in a backslash, a layer cannot be unprepared while its volume is mounted,
//! ...), so an orchestration bug shows up as an error here too.
//!
//! Every host call is numbered from 1; [`SimHost::fail_call`] makes a chosen
//! call fail without touching the state. [`SimHost::state`] returns the whole
//! model as a value, so a test can assert that a failed mount left the host
//! exactly as it was.
//!
//! Simplifications: paths compare case-sensitively after
//! [`clean_path`](super::clean_path()); a stream opened through a volume mount
//! point lives on the mounted volume's root (as on Windows, where opening the
//! path follows the mount point), and a volume, with its streams, exists only
//! while its layer is prepared.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

use super::{clean_path, codes, PathKind, WinError, WindowsHost, VOLUME_PREFIX};

/// What a simulated path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimNodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A directory symbolic link to the given path.
    DirSymlink(String),
    /// A directory with the given volume mounted on it.
    VolumeMountPoint(String),
}

/// One simulated path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimNode {
    /// What it is.
    pub kind: SimNodeKind,
    /// Its own alternate data streams.
    pub streams: BTreeMap<String, Vec<u8>>,
}

/// A volume exposed by a prepared layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimVolume {
    /// The layer folder that exposes it.
    pub layer: String,
    /// Alternate data streams on the volume's root directory.
    pub root_streams: BTreeMap<String, Vec<u8>>,
}

/// A layer folder known to the layer service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimLayer {
    /// How many times it is activated.
    pub activations: u32,
    /// The parents it was prepared over, while prepared.
    pub prepared_over: Option<Vec<String>>,
    /// Its volume, while prepared.
    pub volume: Option<String>,
}

/// The whole simulated host, comparable as a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimState {
    /// Every path, by cleaned path.
    pub nodes: BTreeMap<String, SimNode>,
    /// Every volume, by `\\?\Volume{...}` path (no trailing backslash).
    pub volumes: BTreeMap<String, SimVolume>,
    /// Every layer folder, by cleaned path.
    pub layers: BTreeMap<String, SimLayer>,
}

#[derive(Default)]
struct Inner {
    state: SimState,
    calls: u64,
    fail: BTreeSet<u64>,
    log: Vec<&'static str>,
    next_volume: u64,
    mount_path_override: BTreeMap<String, String>,
}

/// The simulated Windows host. See the module documentation.
#[derive(Default)]
pub struct SimHost {
    inner: Mutex<Inner>,
}

fn parent_of(path: &str) -> Option<String> {
    let cut = path.rfind('\\')?;
    let parent = &path[..cut];
    if parent.is_empty() {
        return None;
    }
    if parent.len() == 2 && parent.ends_with(':') {
        // The parent of `C:\x` is the root `C:\`, unless `path` is the root.
        return (path.len() > 3).then(|| format!("{parent}\\"));
    }
    Some(parent.to_string())
}

fn err(code: u32) -> WinError {
    WinError::win32(code)
}

impl SimHost {
    /// An empty host.
    pub fn new() -> SimHost {
        SimHost::default()
    }

    /// Creates the directory `path` and its missing ancestors (no call is
    /// counted: this is test setup, not host behaviour).
    pub fn add_dir(&self, path: &str) {
        let mut inner = self.inner.lock();
        let mut p = clean_path(path);
        let mut chain = Vec::new();
        loop {
            chain.push(p.clone());
            match parent_of(&p) {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for p in chain.into_iter().rev() {
            inner.state.nodes.entry(p).or_insert(SimNode {
                kind: SimNodeKind::Dir,
                streams: BTreeMap::new(),
            });
        }
    }

    /// Creates a file at `path`, with its ancestors.
    pub fn add_file(&self, path: &str) {
        let p = clean_path(path);
        if let Some(parent) = parent_of(&p) {
            self.add_dir(&parent);
        }
        self.inner.lock().state.nodes.insert(
            p,
            SimNode {
                kind: SimNodeKind::File,
                streams: BTreeMap::new(),
            },
        );
    }

    /// Creates a layer folder the layer service knows.
    pub fn add_layer(&self, path: &str) {
        self.add_dir(path);
        self.inner
            .lock()
            .state
            .layers
            .insert(clean_path(path), SimLayer::default());
    }

    /// Makes `GetLayerMountPath` of `layer` return `path` instead of its
    /// volume (a read-only layer's folder path, say).
    pub fn set_layer_mount_path(&self, layer: &str, path: &str) {
        self.inner
            .lock()
            .mount_path_override
            .insert(clean_path(layer), path.to_string());
    }

    /// Writes a stream directly, bypassing the call counter (test setup).
    pub fn put_stream(&self, path: &str, stream: &str, data: &[u8]) {
        let mut inner = self.inner.lock();
        if let Some(streams) = inner.streams_mut(&clean_path(path)) {
            streams.insert(stream.to_string(), data.to_vec());
        }
    }

    /// Deletes a stream directly, bypassing the call counter (test setup).
    pub fn remove_stream(&self, path: &str, stream: &str) {
        let mut inner = self.inner.lock();
        if let Some(streams) = inner.streams_mut(&clean_path(path)) {
            streams.remove(stream);
        }
    }

    /// Makes host call number `n` (counting from 1 since the host was made)
    /// fail with [`WinError::Injected`].
    pub fn fail_call(&self, n: u64) {
        self.inner.lock().fail.insert(n);
    }

    /// How many host calls have been made.
    pub fn calls(&self) -> u64 {
        self.inner.lock().calls
    }

    /// The names of the host calls made so far, in order.
    pub fn call_log(&self) -> Vec<&'static str> {
        self.inner.lock().log.clone()
    }

    /// A copy of the whole simulated state.
    pub fn state(&self) -> SimState {
        self.inner.lock().state.clone()
    }

    /// What is at `path`, if anything.
    pub fn node(&self, path: &str) -> Option<SimNode> {
        self.inner
            .lock()
            .state
            .nodes
            .get(&clean_path(path))
            .cloned()
    }

    /// Counts a call and fails it if it was chosen to fail; otherwise runs
    /// `f` on the state.
    fn call<T>(
        &self,
        function: &'static str,
        f: impl FnOnce(&mut Inner) -> Result<T, WinError>,
    ) -> Result<T, WinError> {
        let mut inner = self.inner.lock();
        inner.calls += 1;
        let call = inner.calls;
        inner.log.push(function);
        if inner.fail.remove(&call) {
            return Err(WinError::Injected { call, function });
        }
        f(&mut inner)
    }
}

impl Inner {
    fn layer_key(home: &str, id: &str) -> String {
        clean_path(&format!("{home}{id}"))
    }

    fn layer_mut(&mut self, home: &str, id: &str) -> Result<&mut SimLayer, WinError> {
        self.state
            .layers
            .get_mut(&Inner::layer_key(home, id))
            .ok_or(err(codes::PATH_NOT_FOUND))
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = if path.ends_with('\\') {
            path.to_string()
        } else {
            format!("{path}\\")
        };
        self.state
            .nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn parent_is_dir(&self, path: &str) -> bool {
        match parent_of(path) {
            Some(parent) => matches!(
                self.state.nodes.get(&parent).map(|n| &n.kind),
                Some(SimNodeKind::Dir)
            ),
            None => false,
        }
    }

    /// The streams that opening `path` reaches: through a mount point, the
    /// volume root's; through a directory link, its target's.
    fn streams_mut(&mut self, path: &str) -> Option<&mut BTreeMap<String, Vec<u8>>> {
        let kind = self.state.nodes.get(path)?.kind.clone();
        match kind {
            SimNodeKind::VolumeMountPoint(v) => {
                self.state.volumes.get_mut(&v).map(|v| &mut v.root_streams)
            }
            SimNodeKind::DirSymlink(t) => {
                let t = clean_path(&t);
                match self.state.nodes.get(&t).map(|n| &n.kind) {
                    Some(SimNodeKind::Dir | SimNodeKind::File) => {
                        self.state.nodes.get_mut(&t).map(|n| &mut n.streams)
                    }
                    _ => None,
                }
            }
            SimNodeKind::Dir | SimNodeKind::File => {
                self.state.nodes.get_mut(path).map(|n| &mut n.streams)
            }
        }
    }
}

/// The cleaned form of a path the volume calls require to end in a
/// backslash; `ERROR_INVALID_PARAMETER` if it does not.
fn slashed(path: &str) -> Result<String, WinError> {
    if path.ends_with('\\') {
        Ok(clean_path(path))
    } else {
        Err(err(codes::INVALID_PARAMETER))
    }
}

impl WindowsHost for SimHost {
    fn activate_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        self.call("ActivateLayer", |inner| {
            inner.layer_mut(home, id)?.activations += 1;
            Ok(())
        })
    }

    fn prepare_layer(&self, home: &str, id: &str, parents: &[String]) -> Result<(), WinError> {
        self.call("PrepareLayer", |inner| {
            for p in parents {
                if !inner.state.layers.contains_key(&clean_path(p)) {
                    return Err(err(codes::PATH_NOT_FOUND));
                }
            }
            let key = Inner::layer_key(home, id);
            inner.next_volume += 1;
            let volume = format!(
                "{VOLUME_PREFIX}00000000-0000-0000-0000-{:012x}}}",
                inner.next_volume
            );
            let layer = inner.layer_mut(home, id)?;
            if layer.activations == 0 {
                return Err(err(codes::NOT_FOUND));
            }
            if layer.prepared_over.is_some() {
                return Err(err(codes::ALREADY_EXISTS));
            }
            layer.prepared_over = Some(parents.to_vec());
            layer.volume = Some(volume.clone());
            inner.state.volumes.insert(
                volume,
                SimVolume {
                    layer: key,
                    root_streams: BTreeMap::new(),
                },
            );
            Ok(())
        })
    }

    fn layer_mount_path(&self, home: &str, id: &str) -> Result<String, WinError> {
        self.call("GetLayerMountPath", |inner| {
            let key = Inner::layer_key(home, id);
            let volume = inner
                .layer_mut(home, id)?
                .volume
                .clone()
                .ok_or(err(codes::NOT_FOUND))?;
            Ok(inner
                .mount_path_override
                .get(&key)
                .cloned()
                .unwrap_or(volume))
        })
    }

    fn unprepare_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        self.call("UnprepareLayer", |inner| {
            let volume = inner
                .layer_mut(home, id)?
                .volume
                .clone()
                .ok_or(err(codes::NOT_FOUND))?;
            let mounted = inner
                .state
                .nodes
                .values()
                .any(|n| n.kind == SimNodeKind::VolumeMountPoint(volume.clone()));
            if mounted {
                return Err(err(codes::BUSY));
            }
            inner.state.volumes.remove(&volume);
            let layer = inner.layer_mut(home, id)?;
            layer.prepared_over = None;
            layer.volume = None;
            Ok(())
        })
    }

    fn deactivate_layer(&self, home: &str, id: &str) -> Result<(), WinError> {
        self.call("DeactivateLayer", |inner| {
            let layer = inner.layer_mut(home, id)?;
            match layer.activations {
                0 => Err(err(codes::NOT_FOUND)),
                1 if layer.prepared_over.is_some() => Err(err(codes::BUSY)),
                _ => {
                    layer.activations -= 1;
                    Ok(())
                }
            }
        })
    }

    fn set_volume_mount_point(&self, mount_point: &str, volume: &str) -> Result<(), WinError> {
        self.call("SetVolumeMountPointW", |inner| {
            let mp = slashed(mount_point)?;
            let vol = slashed(volume)?;
            if !inner.state.volumes.contains_key(&vol) {
                return Err(err(codes::FILE_NOT_FOUND));
            }
            match inner.state.nodes.get(&mp).map(|n| &n.kind) {
                None => return Err(err(codes::PATH_NOT_FOUND)),
                Some(SimNodeKind::Dir) => {}
                Some(_) => return Err(err(codes::DIRECTORY)),
            }
            if inner.has_children(&mp) {
                return Err(err(codes::DIR_NOT_EMPTY));
            }
            if let Some(node) = inner.state.nodes.get_mut(&mp) {
                node.kind = SimNodeKind::VolumeMountPoint(vol);
            }
            Ok(())
        })
    }

    fn delete_volume_mount_point(&self, mount_point: &str) -> Result<(), WinError> {
        self.call("DeleteVolumeMountPointW", |inner| {
            let mp = slashed(mount_point)?;
            match inner.state.nodes.get_mut(&mp) {
                None => Err(err(codes::PATH_NOT_FOUND)),
                Some(node) => match node.kind {
                    SimNodeKind::VolumeMountPoint(_) => {
                        node.kind = SimNodeKind::Dir;
                        Ok(())
                    }
                    _ => Err(err(codes::NOT_A_REPARSE_POINT)),
                },
            }
        })
    }

    fn path_kind(&self, path: &str) -> Result<PathKind, WinError> {
        self.call("GetFileAttributesW", |inner| {
            Ok(
                match inner.state.nodes.get(&clean_path(path)).map(|n| &n.kind) {
                    None => PathKind::Missing,
                    Some(SimNodeKind::Dir) => PathKind::Directory,
                    Some(SimNodeKind::File) => PathKind::Other,
                    Some(SimNodeKind::DirSymlink(_)) => PathKind::DirSymlink,
                    Some(SimNodeKind::VolumeMountPoint(_)) => PathKind::VolumeMountPoint,
                },
            )
        })
    }

    fn create_dir(&self, path: &str) -> Result<(), WinError> {
        self.call("CreateDirectoryW", |inner| {
            let p = clean_path(path);
            if inner.state.nodes.contains_key(&p) {
                return Err(err(codes::ALREADY_EXISTS));
            }
            if !inner.parent_is_dir(&p) {
                return Err(err(codes::PATH_NOT_FOUND));
            }
            inner.state.nodes.insert(
                p,
                SimNode {
                    kind: SimNodeKind::Dir,
                    streams: BTreeMap::new(),
                },
            );
            Ok(())
        })
    }

    fn remove_dir(&self, path: &str) -> Result<(), WinError> {
        self.call("RemoveDirectoryW", |inner| {
            let p = clean_path(path);
            match inner.state.nodes.get(&p).map(|n| &n.kind) {
                None => return Err(err(codes::FILE_NOT_FOUND)),
                Some(SimNodeKind::Dir) => {}
                Some(_) => return Err(err(codes::DIRECTORY)),
            }
            if inner.has_children(&p) {
                return Err(err(codes::DIR_NOT_EMPTY));
            }
            inner.state.nodes.remove(&p);
            Ok(())
        })
    }

    fn create_dir_symlink(&self, link: &str, target: &str) -> Result<(), WinError> {
        self.call("CreateSymbolicLinkW", |inner| {
            let p = clean_path(link);
            if inner.state.nodes.contains_key(&p) {
                return Err(err(codes::ALREADY_EXISTS));
            }
            if !inner.parent_is_dir(&p) {
                return Err(err(codes::PATH_NOT_FOUND));
            }
            inner.state.nodes.insert(
                p,
                SimNode {
                    kind: SimNodeKind::DirSymlink(target.to_string()),
                    streams: BTreeMap::new(),
                },
            );
            Ok(())
        })
    }

    fn remove_dir_symlink(&self, link: &str) -> Result<(), WinError> {
        self.call("RemoveDirectoryW(link)", |inner| {
            let p = clean_path(link);
            match inner.state.nodes.get(&p).map(|n| &n.kind) {
                None => Err(err(codes::FILE_NOT_FOUND)),
                Some(SimNodeKind::DirSymlink(_)) => {
                    inner.state.nodes.remove(&p);
                    Ok(())
                }
                Some(_) => Err(err(codes::NOT_A_REPARSE_POINT)),
            }
        })
    }

    fn read_stream(&self, path: &str, stream: &str) -> Result<Option<Vec<u8>>, WinError> {
        self.call("ReadFile(stream)", |inner| {
            let p = clean_path(path);
            match inner.streams_mut(&p) {
                None => Err(err(codes::FILE_NOT_FOUND)),
                Some(streams) => Ok(streams.get(stream).cloned()),
            }
        })
    }

    fn write_stream(&self, path: &str, stream: &str, data: &[u8]) -> Result<(), WinError> {
        self.call("WriteFile(stream)", |inner| {
            let p = clean_path(path);
            match inner.streams_mut(&p) {
                None => Err(err(codes::FILE_NOT_FOUND)),
                Some(streams) => {
                    streams.insert(stream.to_string(), data.to_vec());
                    Ok(())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_of(r"C:\a\b").as_deref(), Some(r"C:\a"));
        assert_eq!(parent_of(r"C:\a").as_deref(), Some(r"C:\"));
        assert_eq!(parent_of(r"C:\"), None);
        assert_eq!(parent_of("x"), None);
    }

    #[test]
    fn add_dir_makes_ancestors_and_remove_dir_wants_empty() {
        let h = SimHost::new();
        h.add_dir(r"C:\a\b");
        assert!(h.node(r"C:\").is_some());
        assert!(h.node(r"C:\a").is_some());
        assert_eq!(h.remove_dir(r"C:\a"), Err(err(codes::DIR_NOT_EMPTY)));
        assert_eq!(h.remove_dir(r"C:\a\b"), Ok(()));
        assert_eq!(h.remove_dir(r"C:\a"), Ok(()));
        assert_eq!(h.calls(), 3);
    }

    #[test]
    fn injected_failure_changes_nothing() {
        let h = SimHost::new();
        h.add_dir(r"C:\a");
        let before = h.state();
        h.fail_call(1);
        assert!(matches!(
            h.create_dir(r"C:\a\b"),
            Err(WinError::Injected { call: 1, .. })
        ));
        assert_eq!(h.state(), before);
        assert_eq!(h.create_dir(r"C:\a\b"), Ok(()));
        assert_ne!(h.state(), before);
    }

    #[test]
    fn mount_point_needs_trailing_backslashes_and_an_empty_dir() {
        let h = SimHost::new();
        h.add_layer(r"C:\l\1");
        h.add_dir(r"C:\mnt\x");
        h.activate_layer(r"C:\l\", "1").unwrap();
        h.prepare_layer(r"C:\l\", "1", &[]).unwrap();
        let vol = h.layer_mount_path(r"C:\l\", "1").unwrap();
        assert_eq!(
            h.set_volume_mount_point(r"C:\mnt", &format!("{vol}\\")),
            Err(err(codes::INVALID_PARAMETER))
        );
        assert_eq!(
            h.set_volume_mount_point(r"C:\mnt\", &vol),
            Err(err(codes::INVALID_PARAMETER))
        );
        assert_eq!(
            h.set_volume_mount_point(r"C:\mnt\", &format!("{vol}\\")),
            Err(err(codes::DIR_NOT_EMPTY))
        );
        h.set_volume_mount_point(r"C:\mnt\x\", &format!("{vol}\\"))
            .unwrap();
        // The volume is busy while mounted, and the layer while prepared.
        assert_eq!(h.unprepare_layer(r"C:\l\", "1"), Err(err(codes::BUSY)));
        assert_eq!(h.deactivate_layer(r"C:\l\", "1"), Err(err(codes::BUSY)));
    }
}
