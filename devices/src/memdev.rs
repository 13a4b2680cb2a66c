//! The memory devices of major 1: `null` (1:3), `zero` (1:5), `full` (1:7),
//! `random` (1:8) and `urandom` (1:9).

use std::sync::Arc;

use tessera_vfs::abi::*;
use tessera_vfs::device::{Device, DeviceKind, DeviceRegistry};
use tessera_vfs::inode::{Ctx, FileOps};

/// The major number of the memory devices.
pub const MEM_MAJOR: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Null,
    Zero,
    Full,
    Random,
}

/// One memory device.
struct MemDevice(Kind);

impl Device for MemDevice {
    fn open(&self, _dev: DevId, _flags: OpenFlags) -> Result<Arc<dyn FileOps>> {
        Ok(Arc::new(MemFile(self.0)))
    }
}

struct MemFile(Kind);

impl FileOps for MemFile {
    fn read(&self, _off: u64, buf: &mut [u8]) -> Result<usize> {
        match self.0 {
            Kind::Null => Ok(0),
            Kind::Zero | Kind::Full => {
                buf.fill(0);
                Ok(buf.len())
            }
            Kind::Random => {
                getrandom::fill(buf).map_err(|_| Errno::EIO)?;
                Ok(buf.len())
            }
        }
    }

    fn write(&self, _ctx: &Ctx<'_>, off: u64, buf: &[u8], _append: bool) -> Result<(usize, u64)> {
        match self.0 {
            Kind::Full => Err(Errno::ENOSPC),
            // Writes to random devices are mixed into the pool on Linux; accepting them is enough here.
            _ => Ok((buf.len(), off)),
        }
    }

    fn seek_data_hole(&self, _off: u64, _data: bool) -> Result<u64> {
        Err(Errno::EINVAL)
    }

    fn llseek(&self, cur: u64, _off: i64, _whence: Whence) -> Option<Result<i64>> {
        Some(Ok(match self.0 {
            // `null_lseek`: null, zero and full stay at 0 whatever is asked.
            Kind::Null | Kind::Zero | Kind::Full => 0,
            // `noop_llseek`: the random devices keep their position.
            Kind::Random => cur as i64,
        }))
    }
}

/// Registers the five memory devices.
pub fn register(reg: &DeviceRegistry) -> Result<()> {
    for (minor, kind) in [
        (3, Kind::Null),
        (5, Kind::Zero),
        (7, Kind::Full),
        (8, Kind::Random),
        (9, Kind::Random),
    ] {
        reg.register(
            DeviceKind::Char,
            MEM_MAJOR,
            Some(minor),
            Arc::new(MemDevice(kind)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_vfs::cred::Credentials;

    #[test]
    fn each_device_behaves() {
        let reg = DeviceRegistry::default();
        register(&reg).unwrap();
        let cred = Credentials::root();
        let ctx = Ctx { cred: &cred };
        let open = |m| {
            reg.open(DeviceKind::Char, DevId::new(1, m), OpenFlags::O_RDWR)
                .unwrap()
        };
        let mut buf = [7u8; 16];
        assert_eq!(open(3).read(0, &mut buf).unwrap(), 0);
        assert_eq!(open(3).write(&ctx, 0, b"gone", false).unwrap().0, 4);
        assert_eq!(open(5).read(0, &mut buf).unwrap(), 16);
        assert_eq!(buf, [0; 16]);
        assert_eq!(
            open(7).write(&ctx, 0, b"x", false).unwrap_err(),
            Errno::ENOSPC
        );
        let mut a = [0u8; 32];
        open(9).read(0, &mut a).unwrap();
        assert_ne!(a, [0u8; 32]);
        assert_eq!(
            reg.open(DeviceKind::Char, DevId::new(1, 4), OpenFlags::O_RDONLY)
                .err(),
            Some(Errno::ENXIO)
        );
    }
}
