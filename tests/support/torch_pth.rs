//! Writes `torch.save`-style checkpoints byte by byte, for hostile-input tests and the pickle fuzz
//! target: pickle opcodes (protocol 2, as torch.save writes them) and a stored zip archive with
//! `archive/data.pkl`, `archive/byteorder` and `archive/data/KEY` storages. Nothing is executed or
//! needs Python.
//!
//! Include it with `#[path = "support/torch_pth.rs"] mod torch_pth;`.
#![allow(dead_code)] // each user takes its own subset

/// A pickle being written; [`Pickle::finish`] adds `STOP`.
#[derive(Default, Clone)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    /// `PROTO 2`.
    pub fn new() -> Self {
        Pickle(vec![0x80, 2])
    }

    /// One raw opcode byte (or any bytes).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn mark(&mut self) -> &mut Self {
        self.raw(b"(")
    }

    /// `GLOBAL module\nname\n`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.raw(b"c")
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }

    /// `BINUNICODE`.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.raw(b"X")
            .raw(&(s.len() as u32).to_le_bytes())
            .raw(s.as_bytes())
    }

    /// `BININT1`/`BININT` when it fits, else `LONG1` with 8 bytes.
    pub fn int(&mut self, v: i64) -> &mut Self {
        match v {
            0..=255 => self.raw(&[b'K', v as u8]),
            _ if i32::try_from(v).is_ok() => self.raw(b"J").raw(&(v as i32).to_le_bytes()),
            _ => self.raw(&[0x8a, 8]).raw(&v.to_le_bytes()),
        }
    }

    /// A tuple of ints (`MARK ... TUPLE`).
    pub fn ints(&mut self, values: &[i64]) -> &mut Self {
        self.mark();
        for &v in values {
            self.int(v);
        }
        self.raw(b"t")
    }

    /// `collections.OrderedDict()`: an empty dict.
    pub fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict").raw(b")R")
    }

    /// `torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`,
    /// the storage being `(storage, torch.<class>, key, "cpu", numel)` by persistent id.
    pub fn tensor(
        &mut self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").mark();
        self.mark()
            .string("storage")
            .global("torch", class)
            .string(key)
            .string("cpu")
            .int(numel)
            .raw(b"tQ");
        self.int(offset).ints(shape).ints(stride).raw(b"\x89");
        self.ordered_dict().raw(b"tR")
    }

    /// The bytes, with `STOP`.
    pub fn finish(&mut self) -> Vec<u8> {
        self.raw(b".");
        self.0.clone()
    }
}

/// A tensor of a state_dict: a contiguous f32 view of storage `key`.
pub struct Entry<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub numel: i64,
    pub offset: i64,
    pub shape: &'a [i64],
    pub stride: &'a [i64],
}

/// The pickle of an `OrderedDict` of f32 tensors, in order (names may repeat).
pub fn state_dict(entries: &[Entry]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.ordered_dict().mark();
    for e in entries {
        p.string(e.name)
            .tensor("FloatStorage", e.key, e.numel, e.offset, e.shape, e.stride);
    }
    p.raw(b"u").finish()
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A zip archive of `entries` (name, bytes), stored uncompressed as `torch.save` writes them.
pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes()); // version needed
        common.extend_from_slice(&0u16.to_le_bytes()); // flags
        common.extend_from_slice(&0u16.to_le_bytes()); // stored
        common.extend_from_slice(&0u16.to_le_bytes()); // time
        common.extend_from_slice(&0x21u16.to_le_bytes()); // date: 1980-01-01
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(data.len() as u32).to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra length
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&common);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    let n = entries.len() as u16;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A `torch.save` archive: `pickle` as `archive/data.pkl`, each storage as `archive/data/KEY`.
pub fn pth(pickle: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
    let names: Vec<String> = storages
        .iter()
        .map(|(k, _)| format!("archive/data/{k}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![
        ("archive/data.pkl", pickle),
        ("archive/byteorder", b"little"),
    ];
    for (name, (_, data)) in names.iter().zip(storages) {
        entries.push((name, data));
    }
    zip(&entries)
}

/// `n` little-endian f32 values `0, 1, 2, ...`.
pub fn f32_storage(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}
