//! The bit packing every supported checkpoint format shares: a dense, LSB-first bit stream
//! of `b`-bit unsigned codes in 32-bit words. Value `i` occupies stream bits
//! `[i·b, (i+1)·b)`; word `k` holds stream bits `[32k, 32k + 32)`, so a value may straddle two
//! words (3, 5, 6 bits). For 2, 4 and 8 bits this is the usual "value `i` at shift
//! `b·(i mod 32/b)`" packing; for 3 bits it is GPTQ's `10|1|10|1|10` layout. GPTQ streams
//! along the input axis per output column (`qweight`) and along the output axis per group
//! (`qzeros`); compressed-tensors and MLX along the input axis per output row.

/// Words needed for `n` values of `bits` bits.
pub fn words(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// `vals` (each `< 2^bits`) packed into `out` (`words(vals.len(), bits)` words, zeroed
/// here first).
pub fn pack_into(vals: impl IntoIterator<Item = u32>, bits: u32, out: &mut [u32]) {
    out.fill(0);
    let b = bits as usize;
    for (i, v) in vals.into_iter().enumerate() {
        debug_assert!(v >> bits == 0, "code {v} does not fit {bits} bits");
        let (w, o) = (i * b / 32, i * b % 32);
        out[w] |= v << o;
        if o + b > 32 {
            out[w + 1] |= v >> (32 - o);
        }
    }
}

/// The codes of an `m × d` row-major matrix, each row packed as its own stream of
/// `words(d, bits)` words (compressed-tensors' `weight_packed`, MLX's `weight`).
pub fn pack_rows(codes: &[i32], m: usize, d: usize, bits: u32) -> Vec<u32> {
    let nw = words(d, bits);
    let mut out = vec![0u32; m * nw];
    for n in 0..m {
        pack_into(
            codes[n * d..(n + 1) * d].iter().map(|&c| c as u32),
            bits,
            &mut out[n * nw..(n + 1) * nw],
        );
    }
    out
}

/// `vals` packed into a new vector of words.
pub fn pack(vals: &[u32], bits: u32) -> Vec<u32> {
    let mut out = vec![0; words(vals.len(), bits)];
    pack_into(vals.iter().copied(), bits, &mut out);
    out
}

/// The first `n` values of a packed stream.
pub fn unpack(words: &[u32], bits: u32, n: usize) -> Vec<u32> {
    let b = bits as usize;
    let mask = ((1u64 << bits) - 1) as u32;
    (0..n)
        .map(|i| {
            let (w, o) = (i * b / 32, i * b % 32);
            let mut v = words[w] >> o;
            if o + b > 32 {
                v |= words[w + 1] << (32 - o);
            }
            v & mask
        })
        .collect()
}

/// Little-endian bytes of words (I32 and U32 tensors store the same bytes).
pub fn le_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Words from little-endian bytes.
pub fn from_le_bytes(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors the clients' own packers give (GPTQModel, compressed-tensors, MLX).
    #[test]
    fn known_words() {
        assert_eq!(pack(&[8; 8], 4), vec![0x8888_8888]);
        assert_eq!(pack(&[7; 8], 4), vec![0x7777_7777]);
        assert_eq!(pack(&(0..8).collect::<Vec<_>>(), 4), vec![0x7654_3210]);
        assert_eq!(pack(&[0, 1, 2, 3].repeat(4), 2), vec![0xE4E4_E4E4]);
        assert_eq!(pack(&[0x80, 1, 2, 3], 8), vec![0x0302_0180]);
        assert_eq!(
            pack(&[3; 32], 3),
            vec![0xDB6D_B6DB, 0xB6DB_6DB6, 0x6DB6_DB6D]
        );
        assert_eq!(
            pack(&[4; 32], 3),
            vec![0x2492_4924, 0x4924_9249, 0x9249_2492]
        );
        assert_eq!(
            pack(&(0..8).collect::<Vec<_>>().repeat(4), 3),
            vec![0x88FA_C688, 0xC688_FAC6, 0xFAC6_88FA]
        );
        assert_eq!(
            pack(&(0..16).collect::<Vec<_>>(), 6),
            vec![0x440C_2040, 0xA248_1C61, 0x3CE3_4C2C]
        );
        assert_eq!(
            pack(&(0..32).collect::<Vec<_>>(), 5),
            vec![
                0x8A41_8820,
                0xC5A9_2839,
                0xCA30_7B9A,
                0x38BD_AB49,
                0xFFBB_CDEB
            ]
        );
    }

    #[test]
    fn unpack_inverts_pack() {
        let mut s = 1u64;
        for bits in 2..=8 {
            for n in [1usize, 7, 32, 33, 100] {
                let vals: Vec<u32> = (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((s >> 33) as u32) & ((1 << bits) - 1)
                    })
                    .collect();
                let w = pack(&vals, bits);
                assert_eq!(w.len(), words(n, bits));
                assert_eq!(unpack(&w, bits, n), vals, "bits {bits} n {n}");
                assert_eq!(from_le_bytes(&le_bytes(&w)), w);
            }
        }
    }
}
