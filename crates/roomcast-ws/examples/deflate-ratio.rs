//! Bytes on the wire for a chat-like JSON feed, with and without permessage-deflate.
//!
//! ```text
//! cargo run --release -p roomcast-ws --example deflate-ratio [MESSAGES]
//! ```
//!
//! The feed is what a roomcast member receives in a busy room: `message` pushes with a
//! room, an offset, a sender among a few dozen, and a line of text drawn from a small
//! vocabulary (seeded, so every run prints the same). Each message is framed as the
//! server frames it (2-4 header bytes), compressed as one message per frame: with context
//! takeover (the default), without it (what a shared, compress-once broadcast needs), and
//! with smaller windows.

use roomcast_ws::deflate::Deflater;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let feed = feed(n);
    let framed = |len: usize| len + if len < 126 { 2 } else { 4 };
    let raw: usize = feed.iter().map(|m| framed(m.len())).sum();
    println!(
        "{n} chat messages, {:.1} bytes of JSON on average",
        feed.iter().map(String::len).sum::<usize>() as f64 / n as f64
    );
    println!("{:<44} {:>10} {:>8}", "", "wire bytes", "of plain");
    println!("{:<44} {:>10} {:>8}", "uncompressed", raw, "100%");
    for (label, bits, reset) in [
        ("deflate, context takeover, 15-bit window", 15, false),
        ("deflate, context takeover, 10-bit window", 10, false),
        ("deflate, no context takeover, 15-bit window", 15, true),
        ("deflate, no context takeover, 10-bit window", 10, true),
    ] {
        let mut d = Deflater::new(bits, reset);
        let mut total = 0;
        for m in &feed {
            let mut out = Vec::new();
            d.compress(m.as_bytes(), true, &mut out);
            total += framed(out.len());
        }
        println!(
            "{label:<44} {total:>10} {:>7.0}%",
            100.0 * total as f64 / raw as f64
        );
    }
    println!();
    for bits in [15, 12, 10, 9] {
        if let Some(kib) = memory_per_connection(bits, 500, feed[0].as_bytes()) {
            println!("memory per connection, deflater + inflater, {bits}-bit window: {kib} KiB");
        }
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// What one connection's compression state holds once it has sent and received a
/// message: a deflater and an inflater, `count` of them, measured by the process's RSS.
fn memory_per_connection(bits: u8, count: usize, message: &[u8]) -> Option<u64> {
    let before = rss_kib()?;
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        let mut d = Deflater::new(bits, false);
        let mut i = roomcast_ws::deflate::Inflater::new(bits, false);
        let mut wire = Vec::new();
        d.compress(message, true, &mut wire);
        let mut back = Vec::new();
        i.inflate(&wire, true, 1 << 20, &mut back).ok()?;
        kept.push((d, i));
    }
    let after = rss_kib()?;
    drop(kept);
    Some((after - before) / count as u64)
}

/// A deterministic chat-like feed (xorshift, fixed seed).
fn feed(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the", "a", "deploy", "is", "green", "again", "who", "broke", "main", "lunch", "today",
        "meeting", "moved", "to", "three", "thanks", "looks", "good", "to", "me", "shipping", "it",
        "now", "can", "you", "review", "my", "PR", "please", "yes", "on", "it", "tests", "pass",
        "locally", "but", "CI", "is", "red", "retrying",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..n)
        .map(|i| {
            let user = next() % 40;
            let len = 3 + next() % 12;
            let text: Vec<&str> = (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
            format!(
                r#"{{"type":"message","room":"team:42","offset":{},"from":"user-{user}","data":{{"text":"{}","ts":{}}}}}"#,
                1000 + i,
                text.join(" "),
                1_764_000_000_000u64 + i as u64 * 731
            )
        })
        .collect()
}
