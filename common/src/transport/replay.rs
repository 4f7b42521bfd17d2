//! Replay protection: a record whose (topic, sender, sequence) was delivered
//! before is refused, so an exact copy of a valid record — re-sent by anyone
//! who can write to the topic, the HMAC tag and all — is never acted on twice.
//!
//! Every sender numbers its messages from the wall clock in µs and counts up
//! by one (see `initial_sequence`), and one sender's records on one topic
//! stay in one partition, so its sequences arrive nearly in order. Per
//! (topic, sender) the guard keeps the highest sequence delivered and which
//! of the [`WINDOW`] sequences below it were delivered (IPsec's anti-replay
//! window): a newer sequence is taken, one inside the window is taken once,
//! one below the window is refused. Memory is bounded: at most
//! [`MAX_STREAMS`] (topic, sender) pairs are tracked; when full, the stream
//! heard from longest ago is forgotten.

use std::collections::{BTreeSet, HashMap};

/// Sequences below a stream's highest that can still arrive (out of order,
/// e.g. a small message overtaking a large chunked one) and be taken once.
pub const WINDOW: u64 = 4096;

/// Most (topic, sender) streams tracked at once.
pub const MAX_STREAMS: usize = 4096;

/// One (topic, sender) stream.
#[derive(Debug, Default)]
struct Stream {
    highest: u64,
    /// Delivered sequences in `(highest - WINDOW, highest]`.
    seen: BTreeSet<u64>,
    /// When the stream was last heard (a counter, for eviction).
    touched: u64,
}

/// Remembers what was delivered, per (topic, sender).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// topic → sender → stream: looked up with borrowed names, so a record
    /// of a known stream allocates nothing.
    streams: HashMap<String, HashMap<String, Stream>>,
    /// Streams tracked, all topics together.
    count: usize,
    clock: u64,
}

impl ReplayGuard {
    /// Whether `sequence` from `sender` on `topic` is new; if so it is
    /// remembered as delivered.
    pub fn admit(&mut self, topic: &str, sender: &str, sequence: u64) -> bool {
        self.clock += 1;
        let known = self
            .streams
            .get(topic)
            .is_some_and(|senders| senders.contains_key(sender));
        if !known {
            if self.count >= MAX_STREAMS {
                self.evict_oldest();
            }
            self.count += 1;
            self.streams
                .entry(topic.to_string())
                .or_default()
                .insert(sender.to_string(), Stream::default());
        }
        let Some(s) = self.streams.get_mut(topic).and_then(|m| m.get_mut(sender)) else {
            return false;
        };
        s.touched = self.clock;
        if s.seen.is_empty() || sequence > s.highest {
            s.highest = sequence;
            s.seen.insert(sequence);
            let floor = sequence.saturating_sub(WINDOW);
            s.seen = s.seen.split_off(&floor.saturating_add(1));
            return true;
        }
        if s.highest - sequence >= WINDOW {
            return false;
        }
        s.seen.insert(sequence)
    }

    /// Whether `sequence` would be refused, without remembering anything
    /// (a chunk of a message already delivered is refused at once).
    pub fn is_replay(&self, topic: &str, sender: &str, sequence: u64) -> bool {
        match self.streams.get(topic).and_then(|m| m.get(sender)) {
            None => false,
            Some(s) if sequence > s.highest => false,
            Some(s) => s.highest - sequence >= WINDOW || s.seen.contains(&sequence),
        }
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .streams
            .iter()
            .flat_map(|(topic, senders)| senders.iter().map(move |(sender, s)| (topic, sender, s)))
            .min_by_key(|(_, _, s)| s.touched)
            .map(|(topic, sender, _)| (topic.clone(), sender.clone()));
        if let Some((topic, sender)) = oldest {
            if let Some(senders) = self.streams.get_mut(&topic) {
                senders.remove(&sender);
                self.count -= 1;
                if senders.is_empty() {
                    self.streams.remove(&topic);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_refused_and_new_sequences_pass() {
        let mut g = ReplayGuard::default();
        assert!(g.admit("t", "w1", 1_000));
        assert!(g.admit("t", "w1", 1_001));
        assert!(!g.admit("t", "w1", 1_001), "exact replay");
        assert!(!g.admit("t", "w1", 1_000), "older replay");
        assert!(g.is_replay("t", "w1", 1_000));
        // Another topic or sender is another stream.
        assert!(g.admit("u", "w1", 1_001));
        assert!(g.admit("t", "w2", 1_001));
        assert!(!g.is_replay("t", "w1", 1_002));
    }

    #[test]
    fn out_of_order_inside_the_window_is_taken_once() {
        let mut g = ReplayGuard::default();
        assert!(g.admit("t", "m", 50));
        assert!(g.admit("t", "m", 52)); // 51 is still on its way
        assert!(g.admit("t", "m", 51));
        assert!(!g.admit("t", "m", 51));
        // Far below the window: refused even if never seen.
        assert!(g.admit("t", "m", 52 + WINDOW + 10));
        assert!(!g.admit("t", "m", 53));
    }

    #[test]
    fn a_restarted_sender_counts_from_a_later_clock() {
        let mut g = ReplayGuard::default();
        for s in 1_000..1_100 {
            assert!(g.admit("t", "w", s));
        }
        // The new process starts at "now" in µs, far above.
        assert!(g.admit("t", "w", 9_000_000));
        assert!(!g.admit("t", "w", 1_050));
    }

    #[test]
    fn memory_stays_bounded_under_many_senders() {
        let mut g = ReplayGuard::default();
        for i in 0..(MAX_STREAMS as u64 * 2) {
            assert!(g.admit("t", &format!("forged-{i}"), i));
        }
        assert!(g.count <= MAX_STREAMS);
        assert_eq!(g.count, g.streams.values().map(HashMap::len).sum::<usize>());
        for s in 0..(3 * WINDOW) {
            g.admit("t", "busy", s);
        }
        let busy = &g.streams["t"]["busy"];
        assert!(busy.seen.len() as u64 <= WINDOW);
    }
}
