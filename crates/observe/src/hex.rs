//! Lowercase hex digits from a table of the 256 byte values: trace and
//! span ids go out as hex on every request (`traceparent` toward the
//! upstream, the access log).
//!
//! The table beats the eight-digits-at-a-time arithmetic this replaced
//! (about 60 against 100 instructions for a trace id): ids are short, and
//! a table lookup and a two-byte store per byte is all it takes.

/// Each byte's two lowercase hex digits.
static PAIRS: [[u8; 2]; 256] = pairs();

const fn pairs() -> [[u8; 2]; 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    table
}

/// Writes the lowercase hex digits of `bytes` into `out`, which holds two
/// digits per byte.
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_format() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 1, 3, 4, 5, 8, 16, 17] {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                let mut out = vec![0u8; len * 2];
                hex_into(&mut out, &bytes);
                let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(String::from_utf8(out).unwrap(), want);
            }
        }
        let mut out = [0u8; 8];
        hex_into(&mut out, &[0x00, 0x9a, 0xf0, 0xff]);
        assert_eq!(&out, b"009af0ff");
    }

    #[test]
    fn every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = vec![0u8; 512];
        hex_into(&mut out, &all);
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}
