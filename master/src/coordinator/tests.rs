//! The coordinator without a broker: events in, actions out, time given.

use std::time::{Duration, Instant};

use common::envelope::MessageKind;
use common::protocol::{Registration, RoundReport, StatusMessage, UpdateDelta};
use common::transport::Delivery;

use super::*;

const PARAMS: usize = 4;

fn config(policy: &str, min_workers: usize) -> MasterConfig {
    let mut cfg = MasterConfig::default();
    cfg.policy.name = policy.into();
    cfg.min_workers = min_workers;
    cfg.heartbeat_timeout_secs = 15;
    cfg.registration_timeout_secs = 60;
    cfg.stop.no_progress_secs = 30;
    cfg.stop.max_wall_secs = 3600;
    cfg.stop.target_accuracy = Some(0.9);
    // One shard at a time unless a test says otherwise (see `prefetch_*`).
    cfg.prefetch = false;
    cfg
}

fn reg(id: &str, incarnation: u64) -> Event {
    Event::Status {
        sender: id.into(),
        msg: StatusMessage::Register(Registration {
            worker_id: id.into(),
            incarnation,
            hostname: "h".into(),
            arch: "x86_64".into(),
            cores: 1,
            slowdown: 1.0,
            emulation: String::new(),
            sample_cache_bytes: 0,
        }),
    }
}

fn report(id: &str, incarnation: u64, round: u64) -> Event {
    Event::Status {
        sender: id.into(),
        msg: StatusMessage::RoundReport(RoundReport {
            worker_id: id.into(),
            incarnation,
            round,
            shard_id: round,
            samples: 100,
            epochs: 1,
            compute_secs: 0.1,
            emulated_idle_secs: 0.0,
            round_secs: 0.1,
            validation_loss: 0.5,
            validation_accuracy: 0.8,
            major: true,
            statistic: None,
            threshold: -1.3,
            base_version: 0,
            update_bytes: 0,
            timing: Default::default(),
            upload_secs: 0.0,
        }),
    }
}

fn update(id: &str, incarnation: u64, sequence: u64, base: u64) -> Event {
    Event::Update {
        sender: id.into(),
        sequence,
        position: Delivery {
            kind: MessageKind::Update,
            sender: id.into(),
            sequence,
            payload: Vec::new(),
            topic: "updates".into(),
            partition: 0,
            offset: sequence as i64,
        },
        update: UpdateDelta {
            worker_id: id.into(),
            incarnation,
            round: 1,
            base_version: base,
            samples: 100,
            validation_loss: 0.5,
            timing: Default::default(),
            delta: vec![1.0; PARAMS],
        },
    }
}

fn tick(up: bool) -> Event {
    Event::Tick {
        broker_reachable: up,
    }
}

fn started(policy: &str, workers: &[&str], t0: Instant) -> Coordinator {
    let mut c =
        Coordinator::new(config(policy, workers.len()), vec![0.0; PARAMS], 1000, t0).unwrap();
    for (i, w) in workers.iter().enumerate() {
        c.handle(reg(w, i as u64 + 1), t0);
    }
    let actions = c.handle(tick(true), t0);
    assert_eq!(actions[0], Action::RecordInitialVersion);
    c.evaluated(
        TestResult {
            loss: 2.3,
            accuracy: 0.1,
        },
        t0,
    );
    c
}

fn stop_of(actions: &[Action]) -> Option<&StopReason> {
    actions.iter().find_map(|a| match a {
        Action::Stop(r) => Some(r),
        _ => None,
    })
}

#[test]
fn training_starts_with_min_workers_each_getting_package_and_shard() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config("bsp", 2), vec![0.0; PARAMS], 1000, t0).unwrap();
    let a = c.handle(reg("w1", 1), t0);
    assert_eq!(
        a,
        [Action::Welcome {
            worker_id: "w1".into(),
            incarnation: 1
        }]
    );
    assert!(
        c.handle(tick(true), t0).is_empty(),
        "one of two workers: wait"
    );
    c.handle(reg("w2", 2), t0);
    let a = c.handle(tick(true), t0);
    assert_eq!(a[0], Action::RecordInitialVersion);
    for w in ["w1", "w2"] {
        assert!(
            a.contains(&Action::SendPackage { worker: w.into() }),
            "{a:?}"
        );
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::SendShard { worker, round: 1, .. } if worker == w)),
            "{a:?}"
        );
    }
}

#[test]
fn too_few_registrations_end_the_run_as_a_failure() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config("bsp", 2), vec![0.0; PARAMS], 1000, t0).unwrap();
    c.handle(reg("w1", 1), t0);
    let a = c.handle(tick(true), t0 + Duration::from_secs(61));
    let r = stop_of(&a).expect("stops");
    assert!(matches!(
        r,
        StopReason::RegistrationTimeout {
            registered: 1,
            needed: 2
        }
    ));
    assert!(r.is_failure());
}

#[test]
fn bsp_makes_a_version_once_every_worker_sent_and_stops_at_the_target() {
    let t0 = Instant::now();
    let mut c = started("bsp", &["w1", "w2"], t0);
    assert!(c.handle(update("w1", 1, 10, 0), t0).is_empty());
    let a = c.handle(update("w2", 2, 11, 0), t0);
    // Both next shards first (the barrier opened), the version's
    // bookkeeping last.
    assert_eq!(shard_rounds(&a, "w1"), vec![2], "{a:?}");
    assert_eq!(shard_rounds(&a, "w2"), vec![2], "{a:?}");
    match a.last() {
        Some(Action::NewVersion {
            version: 1,
            by,
            commit: Some(d),
        }) => {
            assert_eq!(by.len(), 2);
            assert_eq!(
                d.offset, 11,
                "the newest applied update's position is committed"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.version(), 1);
    assert_eq!(c.accepted(), 2);
    assert!(
        c.global().iter().all(|&x| (x - 1.0).abs() < 1e-6),
        "{:?}",
        c.global()
    );
    let a = c.evaluated(
        TestResult {
            loss: 0.3,
            accuracy: 0.95,
        },
        t0,
    );
    assert_eq!(stop_of(&a), Some(&StopReason::TargetReached));
}

#[test]
fn a_replayed_update_is_applied_once() {
    let t0 = Instant::now();
    let mut c = started("asp", &["w1"], t0);
    let a = c.handle(update("w1", 1, 10, 0), t0);
    assert!(
        matches!(a.last(), Some(Action::NewVersion { version: 1, .. })),
        "{a:?}"
    );
    assert_eq!(
        shard_rounds(&a, "w1"),
        vec![2],
        "the update ends the round: {a:?}"
    );
    c.evaluated(
        TestResult {
            loss: 1.0,
            accuracy: 0.5,
        },
        t0,
    );
    let a = c.handle(update("w1", 1, 10, 0), t0);
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(c.version(), 1);
    assert_eq!(c.rejected_total(), 1);
}

#[test]
fn an_unknown_incarnation_is_told_to_register_again() {
    let t0 = Instant::now();
    let mut c = started("asp", &["w1"], t0);
    let a = c.handle(report("w1", 99, 1), t0);
    assert_eq!(
        a,
        [Action::Unknown {
            worker_id: "w1".into()
        }]
    );
    let a = c.handle(update("w1", 99, 5, 0), t0);
    assert_eq!(
        a,
        [Action::Unknown {
            worker_id: "w1".into()
        }]
    );
    assert_eq!(c.rejected()["unknown_incarnation"], 2);
    // It re-registers with the same id: welcomed, package and shard again.
    let a = c.handle(reg("w1", 99), t0);
    assert!(
        a.contains(&Action::SendPackage {
            worker: "w1".into()
        }),
        "{a:?}"
    );
}

#[test]
fn a_silent_worker_is_gone_but_not_while_the_broker_is_unreachable() {
    let t0 = Instant::now();
    let mut c = started("asp", &["w1", "w2"], t0);
    let t = t0 + Duration::from_secs(20);
    // The broker is down: nobody heard from is anyone's fault.
    c.handle(tick(false), t);
    assert_eq!(c.workers().active_ids().len(), 2);
    // Back after 40 s in all: the clocks restart, so nobody is gone yet.
    let t = t0 + Duration::from_secs(40);
    c.handle(tick(true), t);
    assert_eq!(c.workers().active_ids().len(), 2);
    // w1 keeps beating, w2 stays silent past the timeout.
    let hb = |id: &str, inc| Event::Status {
        sender: id.into(),
        msg: StatusMessage::Heartbeat {
            worker_id: id.into(),
            incarnation: inc,
            model_version: 0,
            rejected: Default::default(),
        },
    };
    c.handle(hb("w1", 1), t + Duration::from_secs(10));
    c.handle(tick(true), t + Duration::from_secs(16));
    let active = c.workers().active_ids();
    assert!(
        active.contains("w1") && !active.contains("w2"),
        "{active:?}"
    );
}

#[test]
fn a_run_without_new_versions_stops_as_no_progress() {
    let t0 = Instant::now();
    let mut c = started("asp", &["w1"], t0);
    let hb = Event::Status {
        sender: "w1".into(),
        msg: StatusMessage::Heartbeat {
            worker_id: "w1".into(),
            incarnation: 1,
            model_version: 0,
            rejected: Default::default(),
        },
    };
    for s in (5..30).step_by(5) {
        c.handle(hb_clone(&hb), t0 + Duration::from_secs(s));
        assert!(stop_of(&c.handle(tick(true), t0 + Duration::from_secs(s))).is_none());
    }
    c.handle(hb_clone(&hb), t0 + Duration::from_secs(31));
    let a = c.handle(tick(true), t0 + Duration::from_secs(31));
    let r = stop_of(&a).expect("no progress");
    assert!(r.is_failure());
    assert!(
        r.to_string().contains("no new global version for 31 s"),
        "{r}"
    );
}

fn hb_clone(e: &Event) -> Event {
    match e {
        Event::Status { sender, msg } => Event::Status {
            sender: sender.clone(),
            msg: msg.clone(),
        },
        _ => unreachable!(),
    }
}

#[test]
fn worker_rejections_are_kept_per_process_and_summed_over_restarts() {
    let t0 = Instant::now();
    let mut c = started("asp", &["w1"], t0);
    let hb = |inc, counts: &[(&str, u64)]| Event::Status {
        sender: "w1".into(),
        msg: StatusMessage::Heartbeat {
            worker_id: "w1".into(),
            incarnation: inc,
            model_version: 0,
            rejected: counts.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
        },
    };
    c.handle(hb(1, &[("bad_tag", 2)]), t0 + Duration::from_secs(1));
    // Counts only grow within a process; a junk reason is not kept.
    c.handle(
        hb(1, &[("bad_tag", 3), ("<img src=x>", 9)]),
        t0 + Duration::from_secs(2),
    );
    let stats = |c: &Coordinator| {
        c.workers()
            .all()
            .find(|(id, _)| id.as_str() == "w1")
            .map(|(_, w)| w.stats.rejected_by_worker())
            .unwrap_or_default()
    };
    assert_eq!(stats(&c), [("bad_tag".to_string(), 3)].into());
    // The process restarts: its counts start again and add up.
    c.handle(reg("w1", 2), t0 + Duration::from_secs(3));
    c.handle(
        hb(2, &[("bad_tag", 1), ("malformed", 4)]),
        t0 + Duration::from_secs(4),
    );
    assert_eq!(
        stats(&c),
        [("bad_tag".to_string(), 4), ("malformed".to_string(), 4)].into()
    );
    // A heartbeat from the dead process changes nothing.
    c.handle(hb(1, &[("bad_tag", 100)]), t0 + Duration::from_secs(5));
    assert_eq!(stats(&c)["bad_tag"], 4);
}

fn shard_rounds(actions: &[Action], worker: &str) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendShard {
                worker: w, round, ..
            } if w == worker => Some(*round),
            _ => None,
        })
        .collect()
}

#[test]
fn a_shard_issued_again_after_a_lost_report_has_a_new_round_number() {
    let t0 = Instant::now();
    let mut c = Coordinator::new(config("asp", 1), vec![0.0; PARAMS], 1000, t0).unwrap();
    let first = c.handle(reg("w1", 7), t0);
    let mut rounds = shard_rounds(&first, "w1");
    rounds.extend(shard_rounds(&c.handle(tick(true), t0), "w1"));
    c.evaluated(
        TestResult {
            loss: 2.3,
            accuracy: 0.1,
        },
        t0,
    );
    assert_eq!(rounds, vec![1], "first shard");
    // Its round report is lost; the worker goes silent past the timeout,
    // then comes back with the same incarnation and gets a shard again.
    c.handle(tick(true), t0 + Duration::from_secs(16));
    assert!(c.workers().active_ids().is_empty());
    let again = c.handle(reg("w1", 7), t0 + Duration::from_secs(17));
    assert_eq!(shard_rounds(&again, "w1"), vec![2], "{again:?}");
    // A late report of round 1 neither moves the counter back nor brings
    // a shard (round 1 ended when the worker came back); round 2's does.
    let after = c.handle(report("w1", 7, 1), t0 + Duration::from_secs(18));
    assert!(shard_rounds(&after, "w1").is_empty(), "{after:?}");
    let next = c.handle(report("w1", 7, 2), t0 + Duration::from_secs(19));
    assert_eq!(shard_rounds(&next, "w1"), vec![3], "{next:?}");
}

#[test]
fn a_bsp_barrier_releases_the_parked_workers_with_the_new_version() {
    let t0 = Instant::now();
    let mut c = started("bsp", &["w1", "w2"], t0);
    // w1 finishes first: its update and report; the barrier parks it.
    c.handle(update("w1", 1, 10, 0), t0);
    let parked = c.handle(report("w1", 1, 1), t0);
    assert!(shard_rounds(&parked, "w1").is_empty(), "{parked:?}");
    // w2 completes the barrier: w1's next shard goes out before the new
    // version is evaluated (no tick, no evaluation in between).
    let a = c.handle(update("w2", 2, 11, 0), t0);
    let shard_at = a
        .iter()
        .position(|x| matches!(x, Action::SendShard { worker, .. } if worker == "w1"));
    let version_at = a
        .iter()
        .position(|x| matches!(x, Action::NewVersion { version: 1, .. }));
    assert!(
        matches!((shard_at, version_at), (Some(s), Some(v)) if s < v),
        "{a:?}"
    );
    let after = c.evaluated(
        TestResult {
            loss: 1.0,
            accuracy: 0.5,
        },
        t0,
    );
    assert!(shard_rounds(&after, "w1").is_empty(), "{after:?}");
    // w2's update ended its round and brought its shard with w1's; its
    // report, later, only adds statistics.
    assert_eq!(shard_rounds(&a, "w2"), vec![2], "{a:?}");
    let w2 = c.handle(report("w2", 2, 1), t0);
    assert!(shard_rounds(&w2, "w2").is_empty(), "{w2:?}");
}

fn update_of_round(id: &str, incarnation: u64, sequence: u64, base: u64, round: u64) -> Event {
    let mut e = update(id, incarnation, sequence, base);
    if let Event::Update { update, .. } = &mut e {
        update.round = round;
    }
    e
}

fn report_of_round(id: &str, incarnation: u64, round: u64, compute_secs: f64) -> Event {
    let mut e = report(id, incarnation, round);
    if let Event::Status {
        msg: StatusMessage::RoundReport(r),
        ..
    } = &mut e
    {
        r.compute_secs = compute_secs;
        r.round_secs = compute_secs;
    }
    e
}

/// "fast" makes a version a second; "slow" (behind a slow link) needs six
/// seconds for its first round: its update is six versions stale.
fn slow_link_run(scale: bool) -> Coordinator {
    let t0 = Instant::now();
    let mut cfg = config("asp", 2);
    cfg.aggregation.max_staleness = 2;
    cfg.aggregation.staleness_scales_with_cycle = scale;
    let mut c = Coordinator::new(cfg, vec![0.0; PARAMS], 1000, t0).unwrap();
    c.handle(reg("fast", 1), t0);
    c.handle(reg("slow", 2), t0);
    c.handle(tick(true), t0);
    for r in 1..=6u64 {
        let t = t0 + Duration::from_secs(r);
        c.handle(update_of_round("fast", 1, 10 + r, r - 1, r), t);
        c.handle(report_of_round("fast", 1, r, 0.9), t);
    }
    assert_eq!(c.version(), 6);
    let t = t0 + Duration::from_millis(6500);
    c.handle(update_of_round("slow", 2, 100, 0, 1), t);
    c
}

#[test]
fn a_slow_links_update_is_damped_not_thrown_away() {
    // Its round lasted ~6.5 typical rounds: 2 x 6.5 -> 13 versions allowed.
    let c = slow_link_run(true);
    assert_eq!(c.version(), 7, "the slow worker's update made a version");
    assert_eq!(c.rejected_total(), 0);
    // The fixed bound throws it away.
    let c = slow_link_run(false);
    assert_eq!(c.version(), 6);
    assert_eq!(
        c.rejected().get("too_stale"),
        Some(&1),
        "{:?}",
        c.rejected()
    );
}

#[test]
fn the_allocator_learns_a_rounds_cost_from_the_masters_clock() {
    let t0 = Instant::now();
    let mut cfg = config("asp", 1);
    cfg.allocation.mode = crate::allocation::AllocationMode::CommAware;
    let mut c = Coordinator::new(cfg, vec![0.0; PARAMS], 1000, t0).unwrap();
    c.handle(reg("w", 1), t0);
    c.handle(tick(true), t0);
    // Round 1 went with the package: not a measure. Round 2: issued at
    // 1 s, ended (update) at 3 s, 0.5 s of it compute.
    c.handle(
        update_of_round("w", 1, 1, 0, 1),
        t0 + Duration::from_secs(1),
    );
    c.handle(report_of_round("w", 1, 1, 0.5), t0 + Duration::from_secs(1));
    assert_eq!(
        c.allocator.fixed_cost("w"),
        Some(0.0),
        "from its own report"
    );
    c.handle(
        update_of_round("w", 1, 2, 1, 2),
        t0 + Duration::from_secs(3),
    );
    // The report comes later; the cycle was taken when the update ended the round.
    c.handle(report_of_round("w", 1, 2, 0.5), t0 + Duration::from_secs(4));
    let fixed = c.allocator.fixed_cost("w").unwrap();
    // EMA (0.5) of 0 and 1.5 s.
    assert!((fixed - 0.75).abs() < 1e-9, "{fixed}");
}

#[test]
fn prefetch_keeps_the_next_shard_with_the_worker_and_never_more() {
    let t0 = Instant::now();
    let mut cfg = config("asp", 1);
    cfg.prefetch = true;
    let mut c = Coordinator::new(cfg, vec![0.0; PARAMS], 1000, t0).unwrap();
    c.handle(reg("w", 1), t0);
    let start = c.handle(tick(true), t0);
    assert_eq!(
        shard_rounds(&start, "w"),
        vec![1, 2],
        "the current and the next: {start:?}"
    );
    // Round 1 ends (update, then report): one more, round 3; the report adds none.
    let a = c.handle(update_of_round("w", 1, 1, 0, 1), t0);
    assert_eq!(shard_rounds(&a, "w"), vec![3], "{a:?}");
    let a = c.handle(report_of_round("w", 1, 1, 0.1), t0);
    assert!(shard_rounds(&a, "w").is_empty(), "{a:?}");
    // Gone with two shards out: both go back to the pool.
    c.handle(tick(true), t0 + Duration::from_secs(16));
    assert!(c.workers().active_ids().is_empty());
    assert!(c.allocator.outstanding("w").is_none(), "all returned");
    // BSP and SSP keep one shard at a time.
    for policy in ["bsp", "ssp"] {
        let mut cfg = config(policy, 1);
        cfg.prefetch = true;
        let mut c = Coordinator::new(cfg, vec![0.0; PARAMS], 1000, t0).unwrap();
        c.handle(reg("w", 1), t0);
        let start = c.handle(tick(true), t0);
        assert_eq!(shard_rounds(&start, "w"), vec![1], "{policy}: {start:?}");
    }
}

fn cache_miss(sender: &str, id: &str, incarnation: u64, shard_id: u64) -> Event {
    Event::Status {
        sender: sender.into(),
        msg: StatusMessage::CacheMiss {
            worker_id: id.into(),
            incarnation,
            shard_id,
            missing: 10,
        },
    }
}

#[test]
fn a_cache_miss_resends_the_shard_whole_for_the_current_incarnation_only() {
    let t0 = Instant::now();
    let mut c = started("bsp", &["a", "b"], t0);
    let out = c.handle(cache_miss("a", "a", 1, 7), t0);
    assert_eq!(
        out,
        vec![Action::ResendWhole {
            worker: "a".into(),
            shard_id: 7
        }]
    );
    // Another worker's name, or an old incarnation: no resend.
    assert!(c.handle(cache_miss("b", "a", 1, 7), t0).is_empty());
    assert_eq!(c.rejected().get("sender_mismatch"), Some(&1));
    assert_eq!(
        c.handle(cache_miss("a", "a", 99, 7), t0),
        vec![Action::Unknown {
            worker_id: "a".into()
        }]
    );
}
