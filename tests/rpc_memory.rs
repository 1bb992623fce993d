//! Hardening items 9 and 11: memory that messages and buffers cost.
//!
//! - A huge `buflen` is a limit on reads, not an allocation: the buffers
//!   grow as frames need.
//!
//! Its own test binary: it measures this process's peak memory.

mod common;

use anyfork::Fork;
use anyfork::rpc::Codec;

fn double(n: u64) -> u64 {
    n * 2
}

#[test]
fn a_huge_buflen_is_not_allocated_up_front() {
    let rpc = Fork::new()
        .unwrap()
        .rpc(double)
        .buflen(u32::MAX as usize)
        .start()
        .unwrap();
    assert_eq!(rpc.call_blocking(21).unwrap(), 42);
    assert_eq!(rpc.call_blocking(1 << 40).unwrap(), 1 << 41);
    let pid = rpc.pid().expect("pid after a reply");
    let rss_kb = common::smaps_kb(pid, "Rss");
    assert!(
        rss_kb < 64 * 1024,
        "the child holds {rss_kb} kB with buflen 4 GiB"
    );
}

/// A message of `n` empty octet strings: `n` zero bytes with the raw
/// codec, made without allocating `n` of anything.
struct EmptyStrings(usize);

impl serde::Serialize for EmptyStrings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0))?;
        for _ in 0..self.0 {
            seq.serialize_element(&serde_bytes_empty())?;
        }
        seq.end()
    }
}

/// An empty byte string (`serialize_bytes`), not a list of numbers.
fn serde_bytes_empty() -> impl serde::Serialize {
    struct Empty;
    impl serde::Serialize for Empty {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&[])
        }
    }
    Empty
}

/// Replies with `mib` MiB of empty strings, whatever the parent expects.
fn zeros(mib: u32) -> EmptyStrings {
    EmptyStrings((mib as usize) << 20)
}
anyfork::rpc!(zeros);

/// This process's resident size now and its peak since the last reset, in kB.
fn rss_and_peak_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_raw_reply_of_empty_strings_costs_no_more_than_a_few_frames() {
    const MIB: u32 = 64;
    let rpc = Fork::new()
        .unwrap()
        .rpc("rpc_memory::zeros")
        .types::<u32, u32>()
        .codec(Codec::Raw)
        .start()
        .unwrap();
    // Reset the peak, then read the 64 MiB reply as a u32.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let (before, _) = rss_and_peak_kb();
    let result = rpc.call_blocking(MIB);
    let (_, peak) = rss_and_peak_kb();
    let growth_mib = peak.saturating_sub(before) / 1024;
    println!("a {MIB} MiB reply: the parent grew by {growth_mib} MiB at its peak");
    match result {
        Err(anyfork::rpc::Error::Codec { source, .. }) => {
            assert!(
                source
                    .message()
                    .contains("expected one string, got 67108864"),
                "{source}"
            )
        }
        other => panic!("64 MiB of empty strings as a u32: {other:?}"),
    }
    assert!(
        growth_mib < 4 * u64::from(MIB),
        "decoding a {MIB} MiB reply grew the parent by {growth_mib} MiB"
    );
}
