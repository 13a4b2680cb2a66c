//! The device registry: character and block devices by major and minor
//! number. Device files on any filesystem open through it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::abi::*;
use crate::inode::FileOps;

/// Character or block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A character device.
    Char,
    /// A block device.
    Block,
}

/// A device driver: opens one device number.
pub trait Device: Send + Sync + 'static {
    /// Opens the device `dev` with `flags`.
    fn open(&self, dev: DevId, flags: OpenFlags) -> Result<Arc<dyn FileOps>>;
}

/// (kind, major, minor or every minor).
type DeviceKey = (DeviceKind, u32, Option<u32>);

/// Registered devices. A driver may register a single number or a whole
/// major (minor `None`).
#[derive(Default)]
pub struct DeviceRegistry {
    map: RwLock<HashMap<DeviceKey, Arc<dyn Device>>>,
}

impl DeviceRegistry {
    /// Registers a driver for one number, or for every minor of a major when
    /// `minor` is `None`. A number already taken is `EBUSY`.
    pub fn register(
        &self,
        kind: DeviceKind,
        major: u32,
        minor: Option<u32>,
        dev: Arc<dyn Device>,
    ) -> Result<()> {
        let mut map = self.map.write();
        if map.contains_key(&(kind, major, minor)) {
            return Err(Errno::EBUSY);
        }
        map.insert((kind, major, minor), dev);
        Ok(())
    }

    /// Removes a registration.
    pub fn unregister(&self, kind: DeviceKind, major: u32, minor: Option<u32>) {
        self.map.write().remove(&(kind, major, minor));
    }

    /// Opens a device file; an unregistered number is `ENXIO`.
    pub fn open(&self, kind: DeviceKind, dev: DevId, flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        let drv = {
            let map = self.map.read();
            map.get(&(kind, dev.major, Some(dev.minor)))
                .or_else(|| map.get(&(kind, dev.major, None)))
                .cloned()
        };
        match drv {
            Some(d) => d.open(dev, flags),
            None => Err(Errno::ENXIO),
        }
    }
}
