//! A small front-to-back reader for the structured targets' inputs.
//!
//! The structured targets (`roundtrip`, `deflate`, `rooms_protocol`) read their input with
//! this instead of deriving `Arbitrary` for the whole input: lengths come inline, in front
//! of what they measure, so a seed is easy to write from real data (a handshake offer, a
//! room request) and stays readable in a hex dump. Parts with no real-world form (the
//! grammar of room requests) are length-prefixed blobs decoded with `arbitrary`.
//! Reading past the end yields zeros and empty slices, never an error: every input means
//! something.

use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// Little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Bytes with a little-endian u16 length in front.
    pub fn lp_bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// A string with a little-endian u16 length in front (invalid UTF-8 replaced).
    pub fn lp_str(&mut self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.lp_bytes())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
