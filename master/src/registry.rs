//! The workers the master knows: who is active, their incarnation, liveness
//! and per-worker statistics for the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::protocol::{Registration, RoundReport};

/// What the master knows about one worker.
#[derive(Clone, Debug)]
pub struct WorkerState {
    /// The latest registration (host, cores, slowdown...).
    pub registration: Registration,
    /// Whether the worker counts as alive.
    pub active: bool,
    /// When we last heard from it.
    pub last_seen: Instant,
    /// Last heartbeat, ms since the epoch (for the status file).
    pub last_seen_ms: u64,
    /// The round the worker is on (the next shard's round).
    pub next_round: u64,
    /// Whether a shard is out with the worker (it is training).
    pub busy: bool,
    /// The newest round whose end was handled (by its update or its
    /// report, whichever came first); a later message of the same round
    /// only adds statistics.
    pub ended_round: u64,
    /// The rounds of the newest shards issued, and when (master's clock),
    /// oldest first (a few: more than one is out with prefetch).
    pub issued: std::collections::VecDeque<(u64, Instant)>,
    /// A round whose shard went with a package (its cycle includes the
    /// package's transfer and the engine's load: not a round's cost).
    pub package_round: u64,
    /// The cycle of the newest ended round: (round, seconds from its shard
    /// issued to its end).
    pub last_cycle: Option<(u64, f64)>,
    /// Statistics over the run.
    pub stats: WorkerStats,
}

impl WorkerState {
    /// Most issue times kept per worker.
    const ISSUED_KEPT: usize = 8;

    /// A shard for `round` was issued at `at`.
    pub fn issue(&mut self, round: u64, at: Instant) {
        self.issued.push_back((round, at));
        while self.issued.len() > Self::ISSUED_KEPT {
            self.issued.pop_front();
        }
    }

    /// When the shard of `round` was issued, if it is one of the newest.
    pub fn issued_at(&self, round: u64) -> Option<Instant> {
        self.issued
            .iter()
            .rev()
            .find(|(r, _)| *r == round)
            .map(|(_, at)| *at)
    }

    /// Seconds from `round`'s shard issued to `now`, unless that shard went
    /// with a package (its cycle is then no measure of a round's cost) or
    /// is no longer among the newest issued.
    pub fn cycle_until(&self, round: u64, now: Instant) -> Option<f64> {
        let at = self.issued_at(round)?;
        (round != self.package_round).then(|| now.saturating_duration_since(at).as_secs_f64())
    }

    /// Rounds issued and not ended yet.
    pub fn in_flight(&self) -> usize {
        (self
            .next_round
            .saturating_sub(1)
            .saturating_sub(self.ended_round)) as usize
    }
}

/// Per-worker counters for the run summary.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStats {
    /// Rounds reported.
    pub rounds: u64,
    /// Rounds the gate judged significant.
    pub major_rounds: u64,
    /// Rounds that only sent a report.
    pub minor_rounds: u64,
    /// Samples trained on (shard sizes × epochs).
    pub samples_trained: u64,
    /// Sum of reported round times, seconds.
    pub round_secs_total: f64,
    /// Sum of the emulated idle time, seconds.
    pub emulated_idle_secs_total: f64,
    /// Updates applied to the global model.
    pub updates_accepted: u64,
    /// Updates refused.
    pub updates_rejected: u64,
    /// Shards sent.
    pub shards_received: u64,
    /// Sum of shard sizes sent.
    pub shard_samples_total: u64,
    /// Times the worker (re)registered.
    pub registrations: u64,
    /// Times it was marked gone.
    pub times_gone: u64,
    /// Records the worker rejected, by reason, summed over its earlier
    /// processes (incarnations).
    #[serde(default)]
    pub rejected_earlier: BTreeMap<String, u64>,
    /// The same for its current process, as its latest heartbeat said.
    #[serde(default)]
    pub rejected_now: BTreeMap<String, u64>,
}

/// Most distinct reasons kept per worker (its heartbeat is untrusted input).
pub const MAX_REJECTION_REASONS: usize = 32;

impl WorkerStats {
    /// Records the worker rejected, by reason, over all its processes.
    pub fn rejected_by_worker(&self) -> BTreeMap<String, u64> {
        let mut all = self.rejected_earlier.clone();
        for (reason, n) in &self.rejected_now {
            let e = all.entry(reason.clone()).or_insert(0);
            *e = e.saturating_add(*n);
        }
        all
    }
}

/// A worker as a checkpoint keeps it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerSnapshot {
    /// Its last registration.
    pub registration: Registration,
    /// The round it is on.
    pub next_round: u64,
    /// Its statistics so far.
    pub stats: WorkerStats,
}

/// How a registration relates to what we knew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A worker id we had not seen.
    New,
    /// A known worker with a new incarnation (restarted process) or back after being gone.
    Rejoined,
    /// The same incarnation again (it had not seen our welcome yet).
    Repeat,
}

/// All workers of the run.
#[derive(Debug, Default)]
pub struct WorkerRegistry {
    workers: BTreeMap<String, WorkerState>,
}

impl WorkerRegistry {
    /// Records a registration.
    pub fn register(&mut self, reg: Registration) -> Joined {
        self.register_at(reg, Instant::now())
    }

    /// Records a registration received at `now`.
    pub fn register_at(&mut self, reg: Registration, now: Instant) -> Joined {
        match self.workers.get_mut(&reg.worker_id) {
            Some(w) if w.registration.incarnation == reg.incarnation && w.active => {
                w.last_seen = now;
                w.last_seen_ms = common::protocol::now_ms();
                Joined::Repeat
            }
            Some(w) => {
                let previous_incarnation = w.registration.incarnation;
                w.registration = reg;
                w.active = true;
                w.busy = false;
                // Whatever the old process had out is over.
                w.ended_round = w.next_round.saturating_sub(1);
                w.last_seen = now;
                w.last_seen_ms = common::protocol::now_ms();
                w.stats.registrations += 1;
                if w.registration.incarnation != previous_incarnation {
                    // A new process: the old one's counts are final.
                    let done = std::mem::take(&mut w.stats.rejected_now);
                    for (reason, n) in done {
                        let e = w.stats.rejected_earlier.entry(reason).or_insert(0);
                        *e = e.saturating_add(n);
                    }
                }
                Joined::Rejoined
            }
            None => {
                self.workers.insert(
                    reg.worker_id.clone(),
                    WorkerState {
                        registration: reg,
                        active: true,
                        last_seen: now,
                        last_seen_ms: common::protocol::now_ms(),
                        next_round: 1,
                        busy: false,
                        ended_round: 0,
                        issued: Default::default(),
                        package_round: 0,
                        last_cycle: None,
                        stats: WorkerStats {
                            registrations: 1,
                            ..WorkerStats::default()
                        },
                    },
                );
                Joined::New
            }
        }
    }

    /// The active worker `id` if `incarnation` is its current one.
    pub fn current(&mut self, id: &str, incarnation: u64) -> Option<&mut WorkerState> {
        self.workers
            .get_mut(id)
            .filter(|w| w.active && w.registration.incarnation == incarnation)
    }

    /// Any state of `id`, read only.
    pub fn get(&self, id: &str) -> Option<&WorkerState> {
        self.workers.get(id)
    }

    /// Any state of `id`.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut WorkerState> {
        self.workers.get_mut(id)
    }

    /// Notes a sign of life.
    pub fn touch(&mut self, id: &str, incarnation: u64) -> bool {
        self.touch_at(id, incarnation, Instant::now())
    }

    /// Counts every active worker as heard from at `now` (after a time in
    /// which the master itself could not hear anyone).
    pub fn touch_all(&mut self, now: Instant) {
        for w in self.workers.values_mut().filter(|w| w.active) {
            w.last_seen = now;
        }
    }

    /// Notes a sign of life at `now`.
    pub fn touch_at(&mut self, id: &str, incarnation: u64, now: Instant) -> bool {
        match self.current(id, incarnation) {
            Some(w) => {
                w.last_seen = now;
                w.last_seen_ms = common::protocol::now_ms();
                true
            }
            None => false,
        }
    }

    /// Takes the rejection counts of a heartbeat from `id`'s current
    /// incarnation (counts only grow within a process; reasons must be
    /// short snake_case words, at most [`MAX_REJECTION_REASONS`] kept).
    pub fn record_worker_rejections(
        &mut self,
        id: &str,
        incarnation: u64,
        counts: &[(String, u64)],
    ) {
        let Some(w) = self.current(id, incarnation) else {
            return;
        };
        let plausible = |r: &str| {
            !r.is_empty()
                && r.len() <= 64
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let now = &mut w.stats.rejected_now;
        for (reason, n) in counts.iter().filter(|(r, _)| plausible(r)) {
            let n = *n;
            if now.len() >= MAX_REJECTION_REASONS && !now.contains_key(reason) {
                continue;
            }
            let e = now.entry(reason.clone()).or_insert(0);
            *e = (*e).max(n);
        }
    }

    /// Records a round report's statistics.
    pub fn record_round(&mut self, report: &RoundReport) {
        if let Some(w) = self.current(&report.worker_id, report.incarnation) {
            if report.round + 1 >= w.next_round {
                // No newer shard is out (its update may have ended the
                // round and brought the next one already).
                w.busy = false;
            }
            w.next_round = w.next_round.max(report.round + 1);
            w.last_seen = Instant::now();
            w.last_seen_ms = common::protocol::now_ms();
            let s = &mut w.stats;
            s.rounds += 1;
            if report.major {
                s.major_rounds += 1;
            } else {
                s.minor_rounds += 1;
            }
            s.samples_trained += report.samples * u64::from(report.epochs);
            s.round_secs_total += report.round_secs;
            s.emulated_idle_secs_total += report.emulated_idle_secs;
        }
    }

    /// Marks the end of `round` of the current `incarnation` of `id`: true
    /// the first time (the caller schedules what follows), false when that
    /// round had ended already or is not one the master handed out.
    pub fn end_round(&mut self, id: &str, incarnation: u64, round: u64, now: Instant) -> bool {
        match self.current(id, incarnation) {
            Some(w) if round > w.ended_round && round < w.next_round => {
                w.ended_round = round;
                if let Some(secs) = w.cycle_until(round, now) {
                    w.last_cycle = Some((round, secs));
                }
                if round + 1 >= w.next_round {
                    w.busy = false;
                }
                true
            }
            _ => false,
        }
    }

    /// Marks `id` gone. Returns false when it was not active.
    pub fn mark_gone(&mut self, id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.active => {
                w.active = false;
                w.busy = false;
                w.stats.times_gone += 1;
                true
            }
            _ => false,
        }
    }

    /// Active workers silent for longer than `timeout`.
    pub fn silent(&self, timeout: Duration) -> Vec<String> {
        self.silent_at(Instant::now(), timeout)
    }

    /// Active workers silent at `now` for longer than `timeout`.
    pub fn silent_at(&self, now: Instant, timeout: Duration) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.active && now.duration_since(w.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ids of the active workers.
    pub fn active_ids(&self) -> BTreeSet<String> {
        self.workers
            .iter()
            .filter(|(_, w)| w.active)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// What a checkpoint keeps of every worker.
    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        self.workers
            .values()
            .map(|w| WorkerSnapshot {
                registration: w.registration.clone(),
                next_round: w.next_round,
                stats: w.stats.clone(),
            })
            .collect()
    }

    /// The workers of a checkpoint, all inactive: each must register again
    /// (the restarted master tells them so), keeping its id and statistics.
    pub fn restore(snapshot: Vec<WorkerSnapshot>, now: Instant) -> Self {
        let workers = snapshot
            .into_iter()
            .map(|s| {
                (
                    s.registration.worker_id.clone(),
                    WorkerState {
                        registration: s.registration,
                        active: false,
                        last_seen: now,
                        last_seen_ms: common::protocol::now_ms(),
                        next_round: s.next_round,
                        busy: false,
                        ended_round: s.next_round.saturating_sub(1),
                        issued: Default::default(),
                        package_round: 0,
                        last_cycle: None,
                        stats: s.stats,
                    },
                )
            })
            .collect();
        Self { workers }
    }

    /// Every worker ever seen.
    pub fn all(&self) -> impl Iterator<Item = (&String, &WorkerState)> {
        self.workers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, inc: u64) -> Registration {
        Registration {
            worker_id: id.into(),
            incarnation: inc,
            hostname: "h".into(),
            arch: "x86_64".into(),
            cores: 2,
            slowdown: 1.0,
            emulation: String::new(),
            sample_cache_bytes: 0,
        }
    }

    #[test]
    fn registration_kinds() {
        let mut r = WorkerRegistry::default();
        assert_eq!(r.register(reg("a", 1)), Joined::New);
        assert_eq!(r.register(reg("a", 1)), Joined::Repeat);
        assert_eq!(r.register(reg("a", 2)), Joined::Rejoined);
        assert!(
            r.current("a", 1).is_none(),
            "old incarnation no longer current"
        );
        assert!(r.mark_gone("a"));
        assert!(!r.mark_gone("a"));
        assert_eq!(
            r.register(reg("a", 2)),
            Joined::Rejoined,
            "back after being gone"
        );
        assert_eq!(r.active_ids().len(), 1);
    }

    #[test]
    fn silence_is_detected() {
        let mut r = WorkerRegistry::default();
        r.register(reg("a", 1));
        assert!(r.silent(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(r.silent(Duration::from_millis(10)), vec!["a".to_string()]);
    }
}
