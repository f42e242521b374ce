//! Object IDs as swarmkit makes them.

use rand::RngCore;

/// Length of a swarm object ID.
pub const ID_LEN: usize = 25;

/// A new object ID: 25 lowercase `[0-9a-z]` characters. Like swarmkit, 17
/// random bytes with the top bit set rendered in base 36, first digit
/// dropped (it is biased by the top bit), 25 kept. Randomness comes in
/// through `rng` so tests and the simulator can make IDs reproducible.
pub fn new_id(rng: &mut dyn RngCore) -> String {
    let mut n = [0u8; 17];
    rng.fill_bytes(&mut n);
    n[0] |= 0x80;
    let digits = base36_digits(n);
    digits.chars().skip(1).take(ID_LEN).collect()
}

/// Big-endian bytes to base 36, most significant digit first.
fn base36_digits(mut n: [u8; 17]) -> String {
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(ALPHABET[rem as usize]);
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_look_like_swarmkit_ids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let id = new_id(&mut rng);
            assert_eq!(id.len(), ID_LEN, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn base36_is_right() {
        let mut n = [0u8; 17];
        n[16] = 71; // 71 = 1*36 + 35
        assert_eq!(base36_digits(n), "1z");
    }
}
