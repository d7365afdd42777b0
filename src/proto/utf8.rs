//! Incremental UTF-8 validation for text messages, RFC 6455 §8.1.
//!
//! A text message arrives in pieces (fragments, and TCP chunks within a fragment), and a
//! code point may be cut across pieces. [`Utf8Validator::feed`] reports invalid input at the
//! first piece that makes it invalid, so the connection fails fast (Autobahn 6.4.*), and
//! [`Utf8Validator::finish`] rejects a message that ends inside a code point.
//! Whole runs are checked by `simdutf8` at memory speed; only the at most 3 bytes of a code
//! point cut at a piece boundary are carried over.

/// Pieces up to this long are first checked for plain ASCII (see [`Utf8Validator::feed`]).
const SHORT_PIECE: usize = 256;

/// Streaming UTF-8 validator state: the bytes of a code point cut at a piece boundary.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The input is not UTF-8 (and no continuation can make it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        // First complete a code point left over from the previous piece, byte by byte.
        while self.pending_len > 0 {
            let Some((&byte, rest)) = input.split_first() else {
                return Ok(());
            };
            input = rest;
            let len = usize::from(self.pending_len);
            // A code point has at most 4 bytes, so a 4-byte prefix is either complete or
            // invalid and `len` stays below 4; `get_mut` keeps that an invariant, not a panic.
            let Some(slot) = self.pending.get_mut(len) else { return Err(InvalidUtf8) };
            *slot = byte;
            self.pending_len += 1;
            match std::str::from_utf8(&self.pending[..=len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {} // still incomplete
            }
        }
        // Short ASCII pieces (chat lines, JSON events) are the common case: a word-at-a-time
        // check settles them for a fraction of a full validation's cost.
        if input.len() <= SHORT_PIECE && input.is_ascii() {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(input) {
            Ok(_) => Ok(()),
            // error_len() == None: the input ends inside a code point that may still be
            // completed by the next piece.
            Err(e) if e.error_len().is_none() => {
                let tail = input.get(e.valid_up_to()..).unwrap_or_default();
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message: fails if it stopped inside a code point. Resets for the next one.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, bytes.len());
            v.feed(&bytes[start..cut])?;
            start = cut;
        }
        v.feed(&bytes[start..])?;
        v.finish()
    }

    #[test]
    fn fails_at_the_first_invalid_byte_before_the_message_ends() {
        // Autobahn 6.4.1: "κόσμε" + 0xF4 0x90 (code point > U+10FFFF) + more.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        v.feed(&[0xF4]).unwrap();
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_code_point_fails_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // finish() resets: the next message starts clean.
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn surrogates_and_overlongs_are_invalid() {
        for bad in [&[0xED, 0xA0, 0x80][..], &[0xC0, 0xAF], &[0xE0, 0x80, 0xAF], &[0xFF]] {
            assert_eq!(validate_in_pieces(bad, &[]), Err(InvalidUtf8), "{bad:x?}");
            assert_eq!(validate_in_pieces(bad, &[1, 2]), Err(InvalidUtf8), "{bad:x?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        #[test]
        fn any_split_agrees_with_std(
            bytes in prop_oneof![
                any::<String>().prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
            ],
            cuts in proptest::collection::vec(0usize..60, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let expected = std::str::from_utf8(&bytes).is_ok();
            prop_assert_eq!(validate_in_pieces(&bytes, &cuts).is_ok(), expected);
        }
    }
}
