//! A trace turned into the rate of one link over time, as ROG's
//! `replay_bandwidth.py` does: start at an offset into the trace, scale, and
//! repeat the trace (or hold its last value) when it runs out.
//!
//! Time `t` is seconds since the replay started. The trace position played at
//! `t` is `offset + t` seconds after the trace's first sample; with `wrap` the
//! position is taken modulo [`Trace::period`]. Each sample's rate holds until
//! the next sample, the last one for one last sampling interval (then the trace
//! restarts) with `wrap`, for ever without.

use thiserror::Error;

use super::format::Trace;

/// A parameter of [`ReplaySchedule::new`] out of range.
#[derive(Error, Debug, Clone, PartialEq)]
pub enum ScheduleError {
    /// The parameter `name` is `value`, which breaks `requirement`.
    #[error("replay schedule: {name} = {value} is invalid: it must be {requirement}")]
    Invalid {
        /// Which parameter.
        name: &'static str,
        /// What was given.
        value: f64,
        /// What it must be.
        requirement: &'static str,
    },
}

/// One change of a link's rate: from `time_s` on (seconds since the replay
/// started) the link carries `rate_mbit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePoint {
    /// Seconds since the replay started.
    pub time_s: f64,
    /// The new rate, Mbit/s (already scaled and floored).
    pub rate_mbit: f64,
}

/// The rate of one link over time: a trace replayed from an offset, scaled,
/// floored, and repeated or held at its end.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySchedule {
    /// Sample times relative to the trace's first sample (the first is 0).
    rel_times: Vec<f64>,
    /// Sample rates after scale and floor.
    rates: Vec<f64>,
    /// The offset; reduced modulo the period when wrapping.
    offset_s: f64,
    period_s: f64,
    wrap: bool,
    /// All rates are equal: the schedule has a single change point.
    constant: bool,
}

impl ReplaySchedule {
    /// The rate at `t` is the trace's rate at `offset_secs + t` (counted from
    /// the trace's first sample) × `scale`, but at least `floor_mbit`.
    ///
    /// With `wrap` the trace repeats every [`Trace::period`] seconds and
    /// `offset_secs` may exceed the period; without it the last value holds
    /// after the end (and from the start, when the offset is past the end).
    /// `offset_secs` must be finite and ≥ 0, `scale` finite and > 0,
    /// `floor_mbit` finite and ≥ 0 (tc cannot set a rate of 0, so a caller
    /// shaping a real link passes a small floor such as 0.008 Mbit/s).
    pub fn new(
        trace: &Trace,
        offset_secs: f64,
        scale: f64,
        wrap: bool,
        floor_mbit: f64,
    ) -> Result<Self, ScheduleError> {
        check(
            "offset_secs",
            offset_secs,
            offset_secs.is_finite() && offset_secs >= 0.0,
            "finite and at least 0",
        )?;
        check(
            "scale",
            scale,
            scale.is_finite() && scale > 0.0,
            "finite and greater than 0",
        )?;
        check(
            "floor_mbit",
            floor_mbit,
            floor_mbit.is_finite() && floor_mbit >= 0.0,
            "finite and at least 0",
        )?;
        let first = trace.first_time();
        let rel_times: Vec<f64> = trace.samples().iter().map(|s| s.time_s - first).collect();
        let rates: Vec<f64> = trace
            .samples()
            .iter()
            .map(|s| (s.rate_mbit * scale).max(floor_mbit))
            .collect();
        let period_s = trace.period();
        let offset_s = if wrap {
            offset_secs % period_s
        } else {
            offset_secs
        };
        let constant = rates.windows(2).all(|w| w[0] == w[1]);
        Ok(Self {
            rel_times,
            rates,
            offset_s,
            period_s,
            wrap,
            constant,
        })
    }

    /// The rate in Mbit/s at `t` seconds after the replay started (`t` below
    /// 0 or NaN counts as 0).
    pub fn rate_at(&self, t: f64) -> f64 {
        let t = if t > 0.0 { t } else { 0.0 };
        let mut position = self.offset_s + t;
        if self.wrap {
            position %= self.period_s;
        }
        self.rates[self.index_at(position)]
    }

    /// The period of one pass of the trace, seconds.
    pub fn period(&self) -> f64 {
        self.period_s
    }

    /// The changes of rate from `t = 0` (the first point, when the horizon is
    /// above 0) up to, not including, `horizon_s`; consecutive equal rates are
    /// merged. The
    /// horizon may be infinite: the iterator is lazy and, for a schedule that
    /// never changes, ends after its first point.
    pub fn change_points(&self, horizon_s: f64) -> ChangePoints<'_> {
        let start = self.index_at(self.offset_s);
        ChangePoints {
            schedule: self,
            horizon_s,
            cycle: 0,
            next: start,
            last_rate: None,
            done: horizon_s.is_nan() || horizon_s <= 0.0,
        }
    }

    /// Index of the sample playing at `position` seconds into the trace.
    fn index_at(&self, position: f64) -> usize {
        // rel_times[0] == 0 <= position, so the count is at least 1.
        self.rel_times
            .partition_point(|&r| r <= position)
            .saturating_sub(1)
    }
}

fn check(
    name: &'static str,
    value: f64,
    ok: bool,
    requirement: &'static str,
) -> Result<(), ScheduleError> {
    if ok {
        Ok(())
    } else {
        Err(ScheduleError::Invalid {
            name,
            value,
            requirement,
        })
    }
}

/// The change points of a [`ReplaySchedule`], in time order; see
/// [`ReplaySchedule::change_points`].
#[derive(Debug, Clone)]
pub struct ChangePoints<'a> {
    schedule: &'a ReplaySchedule,
    horizon_s: f64,
    /// How many times the trace has wrapped before sample `next`.
    cycle: u64,
    /// The next sample to look at.
    next: usize,
    last_rate: Option<f64>,
    done: bool,
}

impl Iterator for ChangePoints<'_> {
    type Item = ChangePoint;

    fn next(&mut self) -> Option<ChangePoint> {
        let s = self.schedule;
        while !self.done {
            let Some(last_rate) = self.last_rate else {
                // The first point: whatever plays at t = 0.
                let rate = s.rates[self.next];
                self.last_rate = Some(rate);
                self.done = s.constant;
                self.advance();
                return Some(ChangePoint {
                    time_s: 0.0,
                    rate_mbit: rate,
                });
            };
            if self.next >= s.rates.len() {
                self.done = true;
                break;
            }
            // Computed from the cycle count, not accumulated, so it does not drift.
            let time_s = self.cycle as f64 * s.period_s + s.rel_times[self.next] - s.offset_s;
            if time_s >= self.horizon_s {
                self.done = true;
                break;
            }
            let rate = s.rates[self.next];
            self.advance();
            if rate != last_rate {
                self.last_rate = Some(rate);
                return Some(ChangePoint {
                    time_s,
                    rate_mbit: rate,
                });
            }
        }
        None
    }
}

impl ChangePoints<'_> {
    fn advance(&mut self) {
        self.next += 1;
        if self.next >= self.schedule.rates.len() && self.schedule.wrap {
            self.next = 0;
            self.cycle += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 samples, 1 s apart, starting at t = 10: period 4 s.
    fn trace() -> Trace {
        Trace::parse("10 1\n11 2\n12 2\n13 4\n", "t").expect("valid")
    }

    fn points(s: &ReplaySchedule, horizon: f64) -> Vec<(f64, f64)> {
        s.change_points(horizon)
            .map(|p| (p.time_s, p.rate_mbit))
            .collect()
    }

    #[test]
    fn rates_follow_the_trace_from_its_first_sample() {
        let s = ReplaySchedule::new(&trace(), 0.0, 1.0, false, 0.0).expect("valid");
        assert_eq!(s.rate_at(0.0), 1.0);
        assert_eq!(s.rate_at(0.99), 1.0);
        assert_eq!(s.rate_at(1.0), 2.0);
        assert_eq!(s.rate_at(2.5), 2.0);
        assert_eq!(s.rate_at(3.0), 4.0);
        assert_eq!(s.rate_at(-5.0), 1.0);
        assert_eq!(s.rate_at(f64::NAN), 1.0);
    }

    #[test]
    fn without_wrap_the_last_value_holds() {
        let s = ReplaySchedule::new(&trace(), 0.0, 1.0, false, 0.0).expect("valid");
        assert_eq!(s.rate_at(4.0), 4.0);
        assert_eq!(s.rate_at(1e9), 4.0);
        assert_eq!(
            points(&s, f64::INFINITY),
            vec![(0.0, 1.0), (1.0, 2.0), (3.0, 4.0)]
        );
        // An offset past the end plays the last value from the start.
        let late = ReplaySchedule::new(&trace(), 100.0, 1.0, false, 0.0).expect("valid");
        assert_eq!(late.rate_at(0.0), 4.0);
        assert_eq!(points(&late, f64::INFINITY), vec![(0.0, 4.0)]);
    }

    #[test]
    fn offset_and_scale() {
        let s = ReplaySchedule::new(&trace(), 1.5, 2.0, false, 0.0).expect("valid");
        assert_eq!(s.rate_at(0.0), 4.0);
        assert_eq!(s.rate_at(1.49), 4.0);
        assert_eq!(s.rate_at(1.5), 8.0);
        assert_eq!(points(&s, 10.0), vec![(0.0, 4.0), (1.5, 8.0)]);
    }

    #[test]
    fn wrap_repeats_with_period_including_the_last_interval() {
        let s = ReplaySchedule::new(&trace(), 0.0, 1.0, true, 0.0).expect("valid");
        assert_eq!(s.period(), 4.0);
        assert_eq!(s.rate_at(3.5), 4.0);
        assert_eq!(s.rate_at(4.0), 1.0);
        assert_eq!(s.rate_at(5.0), 2.0);
        assert_eq!(s.rate_at(4.0 * 1000.0 + 3.0), 4.0);
        assert_eq!(
            points(&s, 9.0),
            vec![
                (0.0, 1.0),
                (1.0, 2.0),
                (3.0, 4.0),
                (4.0, 1.0),
                (5.0, 2.0),
                (7.0, 4.0),
                (8.0, 1.0),
            ]
        );
    }

    #[test]
    fn wrap_with_an_offset_beyond_the_period() {
        // 9.5 s = two periods + 1.5 s.
        let s = ReplaySchedule::new(&trace(), 9.5, 1.0, true, 0.0).expect("valid");
        assert_eq!(s.rate_at(0.0), 2.0);
        assert_eq!(s.rate_at(1.5), 4.0);
        assert_eq!(s.rate_at(2.5), 1.0);
        assert_eq!(s.rate_at(3.5), 2.0);
        assert_eq!(
            points(&s, 7.0),
            vec![
                (0.0, 2.0),
                (1.5, 4.0),
                (2.5, 1.0),
                (3.5, 2.0),
                (5.5, 4.0),
                (6.5, 1.0)
            ]
        );
        for p in s.change_points(100.0) {
            assert_eq!(s.rate_at(p.time_s + 0.25), p.rate_mbit, "at {}", p.time_s);
        }
    }

    #[test]
    fn floor_applies_after_scale_and_merges_equal_rates() {
        let t = Trace::parse("0 0\n0.5 0.001\n1 5\n1.5 0\n", "t").expect("valid");
        let s = ReplaySchedule::new(&t, 0.0, 0.5, true, 0.008).expect("valid");
        assert_eq!(s.rate_at(0.0), 0.008);
        assert_eq!(s.rate_at(0.5), 0.008);
        assert_eq!(s.rate_at(1.0), 2.5);
        // 0 → floor, 0.0005 → floor: merged; the last sample (floor) and the
        // wrapped first one (floor) merge too.
        assert_eq!(
            points(&s, 4.0),
            vec![
                (0.0, 0.008),
                (1.0, 2.5),
                (1.5, 0.008),
                (3.0, 2.5),
                (3.5, 0.008)
            ]
        );
    }

    #[test]
    fn a_constant_schedule_has_one_point_even_with_an_infinite_horizon() {
        let t = Trace::parse("0 0\n1 0\n2 0\n", "t").expect("valid");
        let s = ReplaySchedule::new(&t, 0.7, 1.0, true, 0.008).expect("valid");
        assert_eq!(points(&s, f64::INFINITY), vec![(0.0, 0.008)]);
    }

    #[test]
    fn horizon_excludes_its_own_time() {
        let s = ReplaySchedule::new(&trace(), 0.0, 1.0, true, 0.0).expect("valid");
        assert_eq!(points(&s, 1.0), vec![(0.0, 1.0)]);
        assert_eq!(points(&s, 0.0), vec![]);
        // An infinite horizon on a wrapping schedule goes on for ever.
        assert_eq!(s.change_points(f64::INFINITY).take(1000).count(), 1000);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let t = trace();
        for (offset, scale, floor, name) in [
            (-1.0, 1.0, 0.0, "offset_secs"),
            (f64::NAN, 1.0, 0.0, "offset_secs"),
            (f64::INFINITY, 1.0, 0.0, "offset_secs"),
            (0.0, 0.0, 0.0, "scale"),
            (0.0, f64::NAN, 0.0, "scale"),
            (0.0, 1.0, -0.1, "floor_mbit"),
            (0.0, 1.0, f64::INFINITY, "floor_mbit"),
        ] {
            let e = ReplaySchedule::new(&t, offset, scale, true, floor).expect_err("invalid");
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
