//! `FrameHeader::parse` on arbitrary bytes.
//!
//! Checks: a parsed header is at most 14 bytes and within the input; every shorter prefix
//! asks for more bytes; encoding the header gives one that parses back to it, byte for
//! byte the input when the input used the minimal length form; errors are exactly the
//! reserved opcodes and 64-bit lengths with the top bit set; `Ok(None)` only for inputs too
//! short to hold a header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsedge::proto::frame::{FrameError, FrameHeader, OpCode, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    match FrameHeader::parse(data) {
        Ok(Some((header, n))) => {
            assert!(n <= MAX_HEADER_LEN, "header of {n} bytes");
            assert!(n <= data.len(), "header of {n} bytes from {} input bytes", data.len());
            assert!(n >= 2);
            assert!(header.rsv <= 0b111);
            assert!(header.payload_len < 1 << 63);
            assert_eq!(header.fin, data[0] & 0x80 != 0);
            assert_eq!(header.mask.is_some(), data[1] & 0x80 != 0);
            // The header depends on its own bytes only.
            assert_eq!(FrameHeader::parse(&data[..n]), Ok(Some((header, n))));
            for cut in 0..n {
                assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            let mut out = [0u8; MAX_HEADER_LEN];
            let m = header.encode(&mut out);
            assert_eq!(m, header.encoded_len());
            assert_eq!(FrameHeader::parse(&out[..m]), Ok(Some((header, m))), "encoded header does not parse back");
            assert!(m <= n, "the minimal form is longer than the input's");
            if m == n {
                assert_eq!(&out[..m], &data[..n], "minimal-form header does not re-encode to the same bytes");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_LEN, "Ok(None) with {} bytes", data.len()),
        Err(FrameError::ReservedOpcode(op)) => {
            assert_eq!(op, data[0] & 0x0F);
            assert_eq!(OpCode::from_u8(op), None);
        }
        Err(FrameError::LengthTooLarge) => {
            assert!(OpCode::from_u8(data[0] & 0x0F).is_some());
            assert_eq!(data[1] & 0x7F, 127);
            assert!(data[2] & 0x80 != 0);
        }
    }
});
