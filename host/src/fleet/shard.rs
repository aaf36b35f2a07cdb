//! Which shard a fleet target belongs to, and which shards a member
//! prefers: pure, frozen functions every member computes alike.
//!
//! A target's shard is the first 8 bytes of the SHA-256 of its name, as a
//! big-endian number, modulo [`SHARDS`]. The hash and the count are frozen
//! (every healer of a fleet must agree on them, whatever its version), so
//! only the ownership of shards ever moves as members come and go, never
//! a target between shards (Prometheus' `hashmod` over the member count
//! moves targets on every change). A member prefers shards by rendezvous
//! hashing (highest random weight), so the shards it takes after a
//! restart are mostly the ones it had.

use sha2::{Digest, Sha256};

/// The fixed number of shards.
pub const SHARDS: u32 = 4096;

/// The shard of the target named `name`.
pub fn shard_of(name: &str) -> u32 {
    (first_u64(name.as_bytes()) % u64::from(SHARDS)) as u32
}

/// How much `member` prefers `shard`: the higher, the sooner taken and
/// the later released.
pub fn preference(member: &str, shard: u32) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(member.as_bytes());
    hasher.update([0]);
    hasher.update(shard.to_be_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The most shards one of `members` takes of `needed`: its fair share
/// ⌈needed / members⌉, plus one, so the last shards are taken even
/// while the members' counts of each other differ.
pub fn most_to_own(needed: usize, members: usize) -> usize {
    needed.div_ceil(members.max(1)) + 1
}

fn first_u64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_s_shard_is_frozen() {
        // Fixed forever: a change here moves every fleet target. The same
        // as Python's int.from_bytes(sha256(name).digest()[:8], "big") % 4096.
        assert_eq!(shard_of("web"), shard_of("web"));
        assert_eq!(
            (shard_of("web"), shard_of("db"), shard_of("")),
            (697, 2436, 3092)
        );
        assert!((0..1000).all(|i| shard_of(&format!("t{i}")) < SHARDS));
    }

    #[test]
    fn targets_spread_over_the_shards() {
        let mut counts = vec![0u32; SHARDS as usize];
        for i in 0..409_600 {
            counts[shard_of(&format!("target-{i}")) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(min >= Some(&50) && max <= Some(&160), "{min:?}..{max:?}");
    }

    #[test]
    fn members_prefer_different_shards() {
        let shards: Vec<u32> = (0..300).collect();
        let best = |member: &str| {
            let mut ranked = shards.clone();
            ranked.sort_by_key(|&s| std::cmp::Reverse(preference(member, s)));
            ranked.truncate(100);
            ranked
        };
        let (a, b) = (best("h1"), best("h2"));
        let shared = a.iter().filter(|s| b.contains(s)).count();
        // Independent choices share about a third.
        assert!((15..=55).contains(&shared), "{shared}");
        assert_eq!(best("h1"), a, "the same member prefers the same shards");
    }

    #[test]
    fn a_member_owns_at_most_its_share_plus_one() {
        assert_eq!(most_to_own(60, 3), 21);
        assert_eq!(most_to_own(60, 2), 31);
        assert_eq!(most_to_own(4096, 120), 36);
        assert_eq!(most_to_own(5, 0), 6);
    }
}
