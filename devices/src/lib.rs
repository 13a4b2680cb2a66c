//! Tessera's devices: memory devices, tty, tun and fuse.
