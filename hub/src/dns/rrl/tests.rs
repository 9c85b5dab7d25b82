//! Response rate limiting: what is counted together, what is not, and what a limited
//! response becomes.

use std::net::IpAddr;

use super::{RateLimiter, ReplyClass, Verdict};
use crate::dns::RateLimitConfig;

const A: u16 = 1;
const AAAA: u16 = 28;
const TXT: u16 = 16;
const NOW: u32 = 1_700_000_000;

fn limiter(per_second: u32, slip: u32, exempt: &[&str]) -> RateLimiter {
    let config = RateLimitConfig {
        responses_per_second: per_second,
        slip,
        exempt: Vec::new(),
    };
    let exempt = exempt.iter().map(|net| net.parse().unwrap()).collect();
    RateLimiter::new(&config, exempt).unwrap()
}

/// A query packet: a header with one question for `name` (presentation form) and `qtype`.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet
}

fn ip(address: &str) -> IpAddr {
    address.parse().unwrap()
}

/// Checks `n` queries and counts the verdicts: (sent, slipped, dropped).
fn flood(limiter: &RateLimiter, client: &str, packet: &[u8], n: u32) -> (u32, u32, u32) {
    let mut counts = (0, 0, 0);
    for _ in 0..n {
        match limiter.check_at(ip(client), packet, NOW) {
            Verdict::Send => counts.0 += 1,
            Verdict::Slip => counts.1 += 1,
            Verdict::Drop => counts.2 += 1,
        }
    }
    counts
}

#[test]
fn a_flood_of_one_name_limits_only_that_name_to_that_network() {
    let limiter = limiter(10, 0, &[]);
    let flooded = query("app.example.com", A);
    assert_eq!(flood(&limiter, "192.0.2.1", &flooded, 100), (10, 0, 90));
    // (client, query, what it gets after the flood above)
    let cases = [
        ("192.0.2.77", query("www.example.com", A), Verdict::Send),
        ("192.0.2.1", query("www.example.com", A), Verdict::Send),
        ("192.0.2.77", query("app.example.com", AAAA), Verdict::Send),
        ("192.0.2.77", query("app.example.com", TXT), Verdict::Send),
        ("192.0.3.1", query("app.example.com", A), Verdict::Send),
        ("192.0.2.77", query("app.example.com", A), Verdict::Drop),
        // Names compare case-insensitively, as in DNS.
        ("192.0.2.200", query("APP.Example.COM", A), Verdict::Drop),
    ];
    for (client, packet, want) in &cases {
        assert_eq!(
            limiter.check_at(ip(client), packet, NOW),
            *want,
            "{client} {packet:?}"
        );
    }
    // A new second starts every count again.
    assert_eq!(
        limiter.check_at(ip("192.0.2.1"), &flooded, NOW + 1),
        Verdict::Send
    );
}

#[test]
fn limited_responses_slip_every_nth() {
    let limiter = limiter(10, 3, &[]);
    let packet = query("app.example.com", A);
    let verdicts: Vec<Verdict> = (0..19)
        .map(|_| limiter.check_at(ip("192.0.2.1"), &packet, NOW))
        .collect();
    let mut want = vec![Verdict::Send; 10];
    want.extend([Verdict::Drop, Verdict::Drop, Verdict::Slip].repeat(3));
    assert_eq!(verdicts, want);
}

#[test]
fn ipv6_networks_are_56_bits() {
    let limiter = limiter(5, 0, &[]);
    let packet = query("app.example.com", AAAA);
    assert_eq!(flood(&limiter, "2001:db8:0:100::1", &packet, 10), (5, 0, 5));
    assert_eq!(flood(&limiter, "2001:db8:0:1ff::9", &packet, 1), (0, 0, 1));
    assert_eq!(flood(&limiter, "2001:db8:0:200::1", &packet, 1), (1, 0, 0));
    // An IPv4-mapped address is its IPv4 network.
    assert_eq!(flood(&limiter, "::ffff:192.0.2.1", &packet, 6), (5, 0, 1));
    assert_eq!(flood(&limiter, "192.0.2.9", &packet, 1), (0, 0, 1));
}

#[test]
fn exempt_networks_are_never_limited() {
    let limiter = limiter(5, 0, &["10.0.0.0/8"]);
    let packet = query("app.example.com", A);
    assert_eq!(flood(&limiter, "10.1.2.3", &packet, 50), (50, 0, 0));
    let class = ReplyClass::NxDomain { zone: 0 };
    for _ in 0..50 {
        assert_eq!(
            limiter.check_reply_at(ip("10.1.2.3"), &packet, class, NOW),
            Verdict::Send
        );
    }
}

#[test]
fn nxdomain_counts_per_zone_so_random_names_are_one_bucket() {
    let limiter = limiter(10, 0, &[]);
    let client = ip("192.0.2.1");
    let mut verdicts = Vec::new();
    for n in 0..30 {
        let packet = query(&format!("x{n}.example.com"), A);
        // Each invented name is a question of its own...
        assert_eq!(limiter.check_at(client, &packet, NOW), Verdict::Send);
        // ...but their NXDOMAIN responses share the zone's bucket.
        let class = ReplyClass::NxDomain { zone: 0 };
        verdicts.push(limiter.check_reply_at(client, &packet, class, NOW));
    }
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Send).count(), 10);
    // Another zone's NXDOMAIN, answers and errors are counted apart.
    let packet = query("x.example.org", A);
    let other = [
        ReplyClass::NxDomain { zone: 1 },
        ReplyClass::Answer,
        ReplyClass::NoData,
        ReplyClass::Error,
    ];
    for class in other {
        assert_eq!(
            limiter.check_reply_at(client, &packet, class, NOW),
            Verdict::Send,
            "{class:?}"
        );
    }
}

#[test]
fn nodata_counts_per_name_whatever_the_type_and_errors_per_network() {
    let limiter = limiter(10, 0, &[]);
    let client = ip("192.0.2.1");
    let sent = |name: &str, class: ReplyClass| {
        (0..20u16)
            .filter(|qtype| {
                let packet = query(name, 100 + qtype);
                limiter.check_reply_at(client, &packet, class, NOW) == Verdict::Send
            })
            .count()
    };
    assert_eq!(sent("app.example.com", ReplyClass::NoData), 10);
    assert_eq!(sent("www.example.com", ReplyClass::NoData), 10);
    assert_eq!(sent("a.example.net", ReplyClass::Error), 10);
    assert_eq!(sent("b.example.net", ReplyClass::Error), 0);
    assert_eq!(sent("c.example.net", ReplyClass::Answer), 20);
}

#[test]
fn unreadable_questions_share_a_bucket_of_their_own() {
    let limiter = limiter(10, 0, &[]);
    let readable = query("app.example.com", A);
    let mut compressed = readable[..12].to_vec();
    compressed.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let mut no_question = readable.clone();
    no_question[5] = 0;
    let truncated = readable[..readable.len() - 2].to_vec();
    let mut long = readable[..12].to_vec();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let unreadable = [
        compressed,
        no_question,
        truncated,
        long,
        readable[..12].to_vec(),
    ];
    let verdicts: Vec<Verdict> = unreadable
        .iter()
        .cycle()
        .take(20)
        .map(|packet| limiter.check_at(ip("192.0.2.1"), packet, NOW))
        .collect();
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Send).count(), 10);
    // The readable question is not held back by them.
    assert_eq!(flood(&limiter, "192.0.2.1", &readable, 10), (10, 0, 0));
}
