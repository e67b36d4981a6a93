//! A small, bounds-checked reader for the parts of an ELF64 file that decide
//! how it is executed and linked: the file header, the program headers,
//! `PT_INTERP` and the dynamic section (`DT_NEEDED`, `DT_SONAME`, `DT_RPATH`,
//! `DT_RUNPATH`, `DT_FLAGS_1`).
//!
//! Everything here is untrusted input. The reader never trusts a length or an
//! offset from the file: every read is checked against the file size and
//! against fixed caps before anything is allocated, and only the pages that
//! hold headers and strings are read (a few `pread`s per object, not the file).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `EM_AARCH64`.
pub const EM_AARCH64: u16 = 183;

/// The ELF machine this build runs on: the machine the kernel and glibc of
/// central accept, and the one we ask of every object in a closure.
pub const HOST_MACHINE: u16 = if cfg!(target_arch = "aarch64") {
    EM_AARCH64
} else {
    EM_X86_64
};

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_SONAME: i64 = 14;
const DT_RPATH: i64 = 15;
const DT_RUNPATH: i64 = 29;
const DT_FLAGS_1: i64 = 0x6fff_fffb;
/// `DF_1_NODEFLIB`: ignore `/etc/ld.so.cache` and the default directories.
pub const DF_1_NODEFLIB: u64 = 0x800;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const DYN_SIZE: usize = 16;
/// The kernel's own cap on the program header table (`ELF_MIN_ALIGN`-ish
/// 64 KiB in `load_elf_phdrs`); real programs have about a dozen entries.
const MAX_PHDR_BYTES: usize = 65536;
/// Real dynamic sections are a few hundred bytes; 1 MiB is 65536 entries.
const MAX_DYNAMIC_BYTES: usize = 1 << 20;
/// `PATH_MAX`, the kernel's bound on `PT_INTERP`.
const MAX_INTERP: usize = 4096;
/// Longest dynamic string (library name, rpath list) we accept.
const MAX_STRING: usize = 65536;
/// Block size of the page cache below; ELF headers and `.dynstr` are
/// usually within the first few blocks.
const BLOCK: u64 = 4096;
/// Bound on bytes read per object through the block cache.
const MAX_BLOCKS: usize = 512;

/// Why a file is not an ELF object we can use. The split mirrors what the
/// kernel and glibc's `open_verify` do with each case: a wrong class or
/// machine makes ld.so skip the candidate and keep searching; everything else
/// is fatal for that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// Could not read (I/O error); the message is the error text.
    Read(String),
    /// Shorter than an ELF header, or a structure runs past end of file.
    Truncated(&'static str),
    /// No `\x7fELF` magic.
    NotElf,
    /// `EI_CLASS` is not ELFCLASS64.
    WrongClass(u8),
    /// Not little-endian.
    WrongEndian,
    /// `e_machine` is not the host's.
    WrongMachine(u16),
    /// Some other structural problem.
    Malformed(&'static str),
}

impl std::fmt::Display for ElfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfError::Read(e) => write!(f, "cannot read file data: {e}"),
            ElfError::Truncated(what) => write!(f, "file too short ({what})"),
            ElfError::NotElf => f.write_str("invalid ELF header"),
            ElfError::WrongClass(c) => write!(f, "wrong ELF class {c} (want 64-bit)"),
            ElfError::WrongEndian => f.write_str("ELF file data encoding not little-endian"),
            ElfError::WrongMachine(m) => {
                write!(
                    f,
                    "ELF machine {m} does not match this host ({HOST_MACHINE})"
                )
            }
            ElfError::Malformed(what) => write!(f, "malformed ELF: {what}"),
        }
    }
}

impl ElfError {
    /// Whether ld.so skips such a candidate and keeps searching (glibc
    /// `open_verify`: "found_other_class" / machine mismatch) rather than
    /// failing the whole load.
    pub fn is_skippable(&self) -> bool {
        matches!(self, ElfError::WrongClass(_) | ElfError::WrongMachine(_))
    }
}

/// Positioned reads from something with a known size: a `File` in real use,
/// a byte slice in tests and property tests.
pub trait ReadAt {
    /// Like `pread`: may return fewer bytes than asked at end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(src) = self.get(start..) else {
            return Ok(0);
        };
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}

/// A tiny cache of 4 KiB blocks so that the header, the program headers, the
/// dynamic section and the strings cost one `pread` per distinct block.
struct Blocks<'a, R: ReadAt + ?Sized> {
    src: &'a R,
    size: u64,
    blocks: Vec<(u64, Vec<u8>)>,
}

impl<'a, R: ReadAt + ?Sized> Blocks<'a, R> {
    fn new(src: &'a R, size: u64) -> Self {
        Blocks {
            src,
            size,
            blocks: Vec::new(),
        }
    }

    fn block(&mut self, index: u64) -> Result<&[u8], ElfError> {
        if let Some(pos) = self.blocks.iter().position(|(i, _)| *i == index) {
            return Ok(&self.blocks[pos].1);
        }
        if self.blocks.len() >= MAX_BLOCKS {
            return Err(ElfError::Malformed(
                "headers spread over too much of the file",
            ));
        }
        let start = index * BLOCK;
        // Bounded by BLOCK, so the allocation is small whatever the file says.
        let want = usize::try_from(BLOCK.min(self.size.saturating_sub(start))).unwrap_or(0);
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match self.src.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ElfError::Read(e.to_string())),
            }
        }
        // A file that shrank under us reads as truncated rather than garbage.
        buf.truncate(got);
        self.blocks.push((index, buf));
        Ok(&self.blocks[self.blocks.len() - 1].1)
    }

    /// `len` bytes at `offset`, or `Truncated` if they are not all in the file.
    fn bytes(&mut self, offset: u64, len: usize, what: &'static str) -> Result<Vec<u8>, ElfError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(ElfError::Truncated(what))?;
        if end > self.size {
            return Err(ElfError::Truncated(what));
        }
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while pos < end {
            let block = self.block(pos / BLOCK)?;
            let inner = (pos % BLOCK) as usize;
            let take = (block.len().saturating_sub(inner)).min((end - pos) as usize);
            if take == 0 {
                return Err(ElfError::Truncated(what));
            }
            out.extend_from_slice(&block[inner..inner + take]);
            pos += take as u64;
        }
        Ok(out)
    }

    /// A NUL-terminated string starting at `offset`, not reaching `limit`
    /// (exclusive) and at most `MAX_STRING` long.
    fn cstr(&mut self, offset: u64, limit: u64) -> Result<Vec<u8>, ElfError> {
        let limit = limit.min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        loop {
            if pos >= limit {
                return Err(ElfError::Malformed("unterminated string"));
            }
            if out.len() > MAX_STRING {
                return Err(ElfError::Malformed("string too long"));
            }
            let block = self.block(pos / BLOCK)?;
            let inner = (pos % BLOCK) as usize;
            let avail = block.get(inner..).ok_or(ElfError::Truncated("string"))?;
            if avail.is_empty() {
                return Err(ElfError::Truncated("string"));
            }
            let room = (limit - pos).min(avail.len() as u64) as usize;
            let chunk = &avail[..room];
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(chunk);
            pos += room as u64;
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// What the closure needs to know about one ELF object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine`.
    pub machine: u16,
    /// `e_type` (`ET_EXEC` or `ET_DYN`).
    pub elf_type: u16,
    /// `PT_INTERP` without its NUL, if any.
    pub interp: Option<Vec<u8>>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<Vec<u8>>,
    /// `DT_SONAME`.
    pub soname: Option<Vec<u8>>,
    /// `DT_RPATH` (the last one, as glibc keeps the last entry of a tag).
    pub rpath: Option<Vec<u8>>,
    /// `DT_RUNPATH`.
    pub runpath: Option<Vec<u8>>,
    /// `DT_FLAGS_1`.
    pub flags_1: u64,
}

struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Parse the ELF header, program headers and dynamic section of `src`
/// (`size` bytes long).
pub fn parse<R: ReadAt + ?Sized>(src: &R, size: u64) -> Result<ElfInfo, ElfError> {
    let mut blocks = Blocks::new(src, size);
    if size < 4 {
        return Err(ElfError::Truncated("ELF header"));
    }
    let magic = blocks.bytes(0, 4, "ELF header")?;
    if magic != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    let ehdr = blocks.bytes(0, EHDR_SIZE, "ELF header")?;
    if ehdr[4] != 2 {
        return Err(ElfError::WrongClass(ehdr[4]));
    }
    if ehdr[5] != 1 {
        return Err(ElfError::WrongEndian);
    }
    if ehdr[6] != 1 || u32_at(&ehdr, 20) != 1 {
        return Err(ElfError::Malformed("ELF version is not EV_CURRENT"));
    }
    let machine = u16_at(&ehdr, 18);
    if machine != HOST_MACHINE {
        return Err(ElfError::WrongMachine(machine));
    }
    let elf_type = u16_at(&ehdr, 16);
    if elf_type != ET_EXEC && elf_type != ET_DYN {
        return Err(ElfError::Malformed("only ET_DYN and ET_EXEC can be loaded"));
    }
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54) as usize;
    let phnum = u16_at(&ehdr, 56) as usize;
    if phentsize != PHDR_SIZE {
        return Err(ElfError::Malformed(
            "ELF file's phentsize not the expected size",
        ));
    }
    // PN_XNUM (0xffff) would put the count in section 0; nothing executable
    // has that many segments, and the kernel refuses tables over 64 KiB.
    let ph_bytes = phnum * PHDR_SIZE;
    if ph_bytes == 0 || ph_bytes > MAX_PHDR_BYTES {
        return Err(ElfError::Malformed("bad program header count"));
    }
    let table = blocks.bytes(phoff, ph_bytes, "program headers")?;
    let phdrs: Vec<Phdr> = table
        .chunks_exact(PHDR_SIZE)
        .map(|p| Phdr {
            p_type: u32_at(p, 0),
            offset: u64_at(p, 8),
            vaddr: u64_at(p, 16),
            filesz: u64_at(p, 32),
        })
        .collect();

    let mut info = ElfInfo {
        machine,
        elf_type,
        ..ElfInfo::default()
    };

    // The kernel uses the first PT_INTERP and wants 2..=PATH_MAX bytes ending
    // in NUL (binfmt_elf.c); the path is the bytes before the first NUL.
    if let Some(ph) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        let len = usize::try_from(ph.filesz).unwrap_or(usize::MAX);
        if !(2..=MAX_INTERP).contains(&len) {
            return Err(ElfError::Malformed("bad PT_INTERP size"));
        }
        let raw = blocks.bytes(ph.offset, len, "PT_INTERP")?;
        if raw[len - 1] != 0 {
            return Err(ElfError::Malformed("PT_INTERP not NUL-terminated"));
        }
        let end = raw.iter().position(|&b| b == 0).unwrap_or(len - 1);
        if end == 0 {
            return Err(ElfError::Malformed("empty PT_INTERP"));
        }
        info.interp = Some(raw[..end].to_vec());
    }

    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(info);
    };
    let dyn_len = usize::try_from(dynamic.filesz).unwrap_or(usize::MAX);
    if dyn_len > MAX_DYNAMIC_BYTES {
        return Err(ElfError::Malformed("dynamic section too large"));
    }
    let dyn_bytes = blocks.bytes(
        dynamic.offset,
        dyn_len - dyn_len % DYN_SIZE,
        "dynamic section",
    )?;
    let mut strtab = None;
    let mut strsz = None;
    let mut needed = Vec::new();
    let (mut soname, mut rpath, mut runpath) = (None, None, None);
    for d in dyn_bytes.chunks_exact(DYN_SIZE) {
        let tag = u64_at(d, 0) as i64;
        let val = u64_at(d, 8);
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_SONAME => soname = Some(val),
            DT_RPATH => rpath = Some(val),
            DT_RUNPATH => runpath = Some(val),
            DT_FLAGS_1 => info.flags_1 = val,
            _ => {}
        }
    }
    if needed.is_empty() && soname.is_none() && rpath.is_none() && runpath.is_none() {
        return Ok(info);
    }
    let strtab = strtab.ok_or(ElfError::Malformed("dynamic strings without DT_STRTAB"))?;
    let strsz = strsz.ok_or(ElfError::Malformed("dynamic strings without DT_STRSZ"))?;
    // DT_STRTAB is an address; the file offset comes from the PT_LOAD that maps it.
    let str_off = phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| strtab >= p.vaddr && strtab - p.vaddr < p.filesz)
        .and_then(|p| p.offset.checked_add(strtab - p.vaddr))
        .ok_or(ElfError::Malformed("DT_STRTAB not in a loaded segment"))?;
    let str_end = str_off
        .checked_add(strsz)
        .ok_or(ElfError::Malformed("DT_STRSZ overflows"))?;
    let mut string = |idx: u64| -> Result<Vec<u8>, ElfError> {
        if idx >= strsz {
            return Err(ElfError::Malformed("string index outside DT_STRSZ"));
        }
        blocks.cstr(str_off + idx, str_end)
    };
    for idx in needed {
        info.needed.push(string(idx)?);
    }
    info.soname = soname.map(&mut string).transpose()?;
    info.rpath = rpath.map(&mut string).transpose()?;
    info.runpath = runpath.map(&mut string).transpose()?;
    Ok(info)
}

/// Parse an open file.
pub fn parse_file(file: &File, size: u64) -> Result<ElfInfo, ElfError> {
    parse(file, size)
}
