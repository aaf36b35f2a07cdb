//! The fleet's keys in etcd, all under `/healer/v1/`:
//!
//! - `members/<member>`: one per live member, on its lease (what it
//!   advertises, as JSON);
//! - `shards/<s>/owner`: the member owning shard `s`, on its lease; the
//!   key's create revision is the shard's *epoch*;
//! - `shards/<s>/issues/<target>/<kind>`: an open issue of a fleet
//!   target, what the next owner carries on from;
//! - `dedup/<key>`: a report seen by some member (create-only), on a
//!   week-long lease.

/// The prefix of every key.
pub const ROOT: &str = "/healer/v1/";

/// Where the members are listed.
pub fn members() -> String {
    format!("{ROOT}members/")
}

/// A member's key.
pub fn member(name: &str) -> String {
    format!("{ROOT}members/{name}")
}

/// Where every shard's keys are.
pub fn shards() -> String {
    format!("{ROOT}shards/")
}

/// Shard `shard`'s owner key.
pub fn owner(shard: u32) -> String {
    format!("{ROOT}shards/{shard}/owner")
}

/// The shard an owner key names, if `key` is one.
pub fn owner_shard(key: &[u8]) -> Option<u32> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(ROOT)?
        .strip_prefix("shards/")?
        .strip_suffix("/owner")?
        .parse()
        .ok()
}

/// Where shard `shard`'s open issues are.
pub fn issues(shard: u32) -> String {
    format!("{ROOT}shards/{shard}/issues/")
}

/// The key of `target`'s open issue of `kind` (target names and kinds
/// hold no `/`... of their own that matters: the target is read back
/// from the issue's value, never from the key).
pub fn issue(shard: u32, target: &str, kind: &str) -> String {
    format!("{ROOT}shards/{shard}/issues/{target}/{kind}")
}

/// A report's deduplication key.
pub fn dedup(key: &str) -> String {
    format!("{ROOT}dedup/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_key_names_its_shard() {
        assert_eq!(owner(17), "/healer/v1/shards/17/owner");
        assert_eq!(owner_shard(owner(17).as_bytes()), Some(17));
        assert_eq!(owner_shard(issue(17, "web", "x/owner").as_bytes()), None);
        assert_eq!(owner_shard(b"/healer/v1/shards/x/owner"), None);
    }
}
