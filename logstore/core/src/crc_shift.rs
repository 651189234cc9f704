//! CRC-32 (IEEE, the reflected form `crc32fast` computes) arithmetic for joining CRCs.
//!
//! The CRC of `a || b` is `shift(crc(a), len(b)) ^ crc(b)`, where `shift` multiplies by `x^(8·len)`
//! modulo the CRC polynomial. `crc32fast`'s own `combine` works that power out for every call; a block
//! of same-sized records needs it for two lengths only, so [`Shift`] computes the multiplication for one
//! length once, as four byte tables, and then costs four table lookups per record: much less than
//! hashing a small record a second time for the block CRC.

/// The CRC-32 polynomial, bit-reflected (bit 31 is the coefficient of `x^0`).
const POLY: u32 = 0xedb8_8320;

/// `a · b mod P` in the reflected representation.
fn mul_mod(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        // b·x mod P: the reflected x^31 coefficient (bit 0) wraps into the polynomial.
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        bit >>= 1;
    }
    product
}

/// `x^(8·bytes) mod P`.
fn x_pow_8n(bytes: usize) -> u32 {
    let mut result = 1u32 << 31; // x^0
    let mut power = 1u32 << 23; // x^8
    let mut n = bytes;
    while n > 0 {
        if n & 1 != 0 {
            result = mul_mod(result, power);
        }
        power = mul_mod(power, power);
        n >>= 1;
    }
    result
}

/// Moves a CRC past `len` more bytes: `crc(a || b) == shift.apply(crc(a)) ^ crc(b)` for `len(b) == len`.
#[derive(Clone)]
pub struct Shift {
    len: usize,
    tables: Box<[[u32; 256]; 4]>,
}

impl Shift {
    /// The shift past `len` bytes (about 1,000 polynomial multiplications to build).
    pub fn new(len: usize) -> Self {
        let k = x_pow_8n(len);
        let mut tables = Box::new([[0u32; 256]; 4]);
        for (j, table) in tables.iter_mut().enumerate() {
            for (byte, slot) in table.iter_mut().enumerate() {
                *slot = mul_mod(k, (byte as u32) << (8 * j));
            }
        }
        Self { len, tables }
    }

    /// The length this shift moves past.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for the shift past zero bytes (the identity).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `crc · x^(8·len) mod P`.
    pub fn apply(&self, crc: u32) -> u32 {
        let t = &self.tables;
        t[0][(crc & 0xff) as usize]
            ^ t[1][((crc >> 8) & 0xff) as usize]
            ^ t[2][((crc >> 16) & 0xff) as usize]
            ^ t[3][(crc >> 24) as usize]
    }
}

impl std::fmt::Debug for Shift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shift").field("len", &self.len).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_crcs_equal_the_crc_of_the_joined_bytes() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for split in [0usize, 1, 4, 9, 1033, 4096, 4999, 5000] {
            let (a, b) = data.split_at(split);
            let shift = Shift::new(b.len());
            assert_eq!(shift.apply(crc32fast::hash(a)) ^ crc32fast::hash(b), crc32fast::hash(&data), "split {split}");
        }
    }

    #[test]
    fn the_zero_shift_is_the_identity() {
        let s = Shift::new(0);
        assert!(s.is_empty());
        for v in [0u32, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(s.apply(v), v);
        }
    }
}
