//! Lowercase hex digits, eight at a time: trace and span ids go out as hex
//! on every request (`traceparent` toward the upstream, the access log).

/// Writes the lowercase hex digits of `bytes` into `out`, which holds two
/// digits per byte. A trailing part of `bytes` shorter than four bytes is
/// written a byte at a time.
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    let mut words = bytes.chunks_exact(4);
    let mut digits = out.chunks_exact_mut(8);
    for (d, w) in (&mut digits).zip(&mut words) {
        d.copy_from_slice(&hex8(u32::from_be_bytes([w[0], w[1], w[2], w[3]])).to_be_bytes());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in digits
        .into_remainder()
        .chunks_exact_mut(2)
        .zip(words.remainder())
    {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// The 8 lowercase hex digits of `x`, most significant first, as the
/// bytes of a big-endian `u64`: the nibbles are spread one to a byte, and
/// each byte gets `'0'`, plus what leads from `'9'` to `'a'` for 10 to 15.
fn hex8(x: u32) -> u64 {
    let mut v = u64::from(x);
    v = (v | v << 16) & 0x0000_ffff_0000_ffff;
    v = (v | v << 8) & 0x00ff_00ff_00ff_00ff;
    v = (v | v << 4) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    v + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'9' - 1)
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
}
