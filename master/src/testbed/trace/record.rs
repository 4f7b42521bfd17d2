//! Recording a trace from a network interface's byte counters.
//!
//! The recorder's core, [`record_trace`], takes the byte counter and the clock
//! as arguments, so it runs against fakes in tests; [`InterfaceCounter`] reads
//! `/sys/class/net/<iface>/statistics/{rx,tx}_bytes`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use thiserror::Error;

use super::format::{Sample, Trace};

/// Where Linux lists network interfaces.
pub const SYSFS_NET: &str = "/sys/class/net";

/// Which bytes of an interface a recording counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Direction {
    /// Received bytes (`rx_bytes`).
    Rx,
    /// Sent bytes (`tx_bytes`).
    Tx,
    /// Received plus sent bytes.
    Sum,
}

impl Direction {
    /// `rx`, `tx` or `sum`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
            Direction::Sum => "sum",
        }
    }
}

/// Why an interface's counters cannot be read.
#[derive(Error, Debug)]
pub enum RecordError {
    /// No such interface.
    #[error("unknown network interface {iface:?}: {} does not exist (interfaces here: {})", dir.display(), available.join(", "))]
    UnknownInterface {
        /// The name asked for.
        iface: String,
        /// The directory that is missing.
        dir: PathBuf,
        /// The interfaces that exist.
        available: Vec<String>,
    },
    /// The name cannot be an interface name (empty, `.`, `..`, or holds `/`).
    #[error("{iface:?} is not a network interface name")]
    BadInterfaceName {
        /// The name given.
        iface: String,
    },
}

/// The byte counters of one interface, read from sysfs.
#[derive(Debug, Clone)]
pub struct InterfaceCounter {
    iface: String,
    direction: Direction,
    rx: PathBuf,
    tx: PathBuf,
}

impl InterfaceCounter {
    /// The counters of `iface` under [`SYSFS_NET`]; fails with
    /// [`RecordError::UnknownInterface`] when it does not exist.
    pub fn open(iface: &str, direction: Direction) -> anyhow::Result<Self> {
        Self::open_in(Path::new(SYSFS_NET), iface, direction)
    }

    /// As [`open`](Self::open), with `root` in place of `/sys/class/net`.
    pub fn open_in(root: &Path, iface: &str, direction: Direction) -> anyhow::Result<Self> {
        if iface.is_empty() || iface == "." || iface == ".." || iface.contains('/') {
            return Err(RecordError::BadInterfaceName {
                iface: iface.to_string(),
            }
            .into());
        }
        let dir = root.join(iface);
        if !dir.is_dir() {
            let mut available: Vec<String> = std::fs::read_dir(root)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            available.sort();
            return Err(RecordError::UnknownInterface {
                iface: iface.to_string(),
                dir,
                available,
            }
            .into());
        }
        let counter = Self {
            iface: iface.to_string(),
            direction,
            rx: dir.join("statistics/rx_bytes"),
            tx: dir.join("statistics/tx_bytes"),
        };
        counter
            .read()
            .with_context(|| format!("interface {iface}"))?;
        Ok(counter)
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The bytes counted so far in this counter's direction.
    pub fn read(&self) -> anyhow::Result<u64> {
        Ok(match self.direction {
            Direction::Rx => read_counter(&self.rx)?,
            Direction::Tx => read_counter(&self.tx)?,
            Direction::Sum => read_counter(&self.rx)?.wrapping_add(read_counter(&self.tx)?),
        })
    }
}

fn read_counter(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a byte count: {:?}", path.display(), text.trim()))
}

/// The recorder's clock, seconds since the recording started.
pub trait RecordClock {
    /// Seconds since the start.
    fn now_s(&mut self) -> f64;
    /// Returns once `now_s() >= t_s`.
    fn sleep_until_s(&mut self, t_s: f64);
}

/// The real clock: an [`Instant`] taken at creation.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    start: Instant,
}

impl WallClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl RecordClock for WallClock {
    fn now_s(&mut self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn sleep_until_s(&mut self, t_s: f64) {
        let Ok(offset) = Duration::try_from_secs_f64(t_s) else {
            return;
        };
        let Some(deadline) = self.start.checked_add(offset) else {
            return;
        };
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }
}

/// Records `intervals` samples, one every `interval_secs`.
///
/// Reads the counter at the start and at each planned time `k · interval`
/// (against one start, so there is no drift); sample `k − 1`, at time
/// `(k − 1) · interval`, is the rate over the `k`-th interval, from the
/// counter's growth divided by the time actually measured between the two
/// reads, in Mbit/s rounded to 1 bit/s. A counter that goes down (an
/// interface reset) counts as 0 for that interval. `progress(k)` is called
/// after each sample. `intervals` must be at least 2, `interval_secs` > 0.
pub fn record_trace(
    read_bytes: &mut dyn FnMut() -> anyhow::Result<u64>,
    clock: &mut dyn RecordClock,
    interval_secs: f64,
    intervals: usize,
    progress: &mut dyn FnMut(usize),
) -> anyhow::Result<Trace> {
    anyhow::ensure!(
        interval_secs.is_finite() && interval_secs > 0.0,
        "record: interval {interval_secs} s must be finite and > 0"
    );
    anyhow::ensure!(
        intervals >= 2,
        "record: at least 2 intervals are needed, got {intervals}"
    );
    let mut previous_bytes = read_bytes()?;
    let mut previous_time = clock.now_s();
    let mut samples = Vec::with_capacity(intervals);
    for k in 1..=intervals {
        clock.sleep_until_s(k as f64 * interval_secs);
        let bytes = read_bytes()?;
        let time = clock.now_s();
        let elapsed = (time - previous_time).max(1e-9);
        let delta = bytes.saturating_sub(previous_bytes);
        let mbit = delta as f64 * 8.0 / elapsed / 1e6;
        samples.push(Sample {
            time_s: ((k - 1) as f64 * interval_secs * 1e6).round() / 1e6,
            rate_mbit: (mbit * 1e6).round() / 1e6,
        });
        previous_bytes = bytes;
        previous_time = time;
        progress(k);
    }
    Ok(Trace::from_samples(samples, "recording")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A clock that jumps to each requested time plus a fixed lag.
    struct FakeClock {
        now: Rc<Cell<f64>>,
        lag: f64,
    }

    impl RecordClock for FakeClock {
        fn now_s(&mut self) -> f64 {
            self.now.get()
        }
        fn sleep_until_s(&mut self, t_s: f64) {
            self.now.set(t_s + self.lag);
        }
    }

    #[test]
    fn rates_from_a_fake_counter() {
        let now = Rc::new(Cell::new(0.0));
        let mut clock = FakeClock {
            now: Rc::clone(&now),
            lag: 0.0,
        };
        // 1 Mbit/s for 1 s, then 4 Mbit/s, then nothing: bytes as a function of time.
        let t = Rc::clone(&now);
        let mut read = move || -> anyhow::Result<u64> {
            let s = t.get();
            let bits = s.min(1.0) * 1e6 + (s.min(2.0) - 1.0).max(0.0) * 4e6;
            Ok((bits / 8.0).round() as u64 + 1_000_000)
        };
        let mut seen = Vec::new();
        let trace =
            record_trace(&mut read, &mut clock, 0.5, 6, &mut |k| seen.push(k)).expect("record");
        let got: Vec<(f64, f64)> = trace
            .samples()
            .iter()
            .map(|s| (s.time_s, s.rate_mbit))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.0, 1.0),
                (0.5, 1.0),
                (1.0, 4.0),
                (1.5, 4.0),
                (2.0, 0.0),
                (2.5, 0.0)
            ]
        );
        assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn measured_elapsed_time_is_used_and_resets_count_as_zero() {
        let now = Rc::new(Cell::new(0.0));
        // The first wake-up is 0.25 s late (0.75 s measured instead of 0.5 s).
        struct LateOnce {
            now: Rc<Cell<f64>>,
            late: bool,
        }
        impl RecordClock for LateOnce {
            fn now_s(&mut self) -> f64 {
                self.now.get()
            }
            fn sleep_until_s(&mut self, t_s: f64) {
                let lag = if std::mem::take(&mut self.late) {
                    0.25
                } else {
                    0.0
                };
                self.now.set(self.now.get().max(t_s + lag));
            }
        }
        let mut clock = LateOnce {
            now: Rc::clone(&now),
            late: true,
        };
        let counts = [0u64, 125_000, 250_000, 10, 62_510];
        let mut i = 0;
        let mut read = move || -> anyhow::Result<u64> {
            let c = counts[i];
            i += 1;
            Ok(c)
        };
        let trace = record_trace(&mut read, &mut clock, 0.5, 4, &mut |_| {}).expect("record");
        let rates: Vec<f64> = trace.samples().iter().map(|s| s.rate_mbit).collect();
        // 1 Mbit over the late 0.75 s; 1 Mbit over the 0.25 s left to the
        // next planned time; a reset; 0.5 Mbit over 0.5 s.
        assert_eq!(rates, vec![1.333333, 4.0, 0.0, 1.0]);
    }

    #[test]
    fn counter_errors_and_bad_arguments_fail() {
        let mut clock = FakeClock {
            now: Rc::new(Cell::new(0.0)),
            lag: 0.0,
        };
        let mut failing = || -> anyhow::Result<u64> { anyhow::bail!("counter gone") };
        let e = record_trace(&mut failing, &mut clock, 0.5, 4, &mut |_| {}).expect_err("fails");
        assert!(e.to_string().contains("counter gone"));
        let mut zero = || -> anyhow::Result<u64> { Ok(0) };
        assert!(record_trace(&mut zero, &mut clock, 0.5, 1, &mut |_| {}).is_err());
        assert!(record_trace(&mut zero, &mut clock, 0.0, 4, &mut |_| {}).is_err());
    }

    #[test]
    fn interface_counters_from_a_fake_sysfs() {
        let root = tempfile::tempdir().expect("tempdir");
        let stats = root.path().join("wl0/statistics");
        std::fs::create_dir_all(&stats).expect("mkdir");
        std::fs::write(stats.join("rx_bytes"), "1000\n").expect("write");
        std::fs::write(stats.join("tx_bytes"), "24\n").expect("write");
        let open = |dir| InterfaceCounter::open_in(root.path(), "wl0", dir).expect("open");
        assert_eq!(open(Direction::Rx).read().expect("read"), 1000);
        assert_eq!(open(Direction::Tx).read().expect("read"), 24);
        assert_eq!(open(Direction::Sum).read().expect("read"), 1024);

        let e = InterfaceCounter::open_in(root.path(), "wl9", Direction::Rx).expect_err("unknown");
        let msg = e.to_string();
        assert!(
            msg.starts_with("unknown network interface \"wl9\""),
            "{msg}"
        );
        assert!(msg.ends_with("(interfaces here: wl0)"), "{msg}");
        for bad in ["", "..", "a/b"] {
            let e = InterfaceCounter::open_in(root.path(), bad, Direction::Rx).expect_err("bad");
            assert!(
                e.to_string().contains("is not a network interface name"),
                "{e}"
            );
        }
        std::fs::write(stats.join("rx_bytes"), "lots\n").expect("write");
        let e = InterfaceCounter::open_in(root.path(), "wl0", Direction::Rx).expect_err("garbage");
        assert!(
            format!("{e:#}").contains("not a byte count: \"lots\""),
            "{e:#}"
        );
    }

    #[test]
    fn unknown_real_interface_is_a_clear_error() {
        let e = InterfaceCounter::open("no-such-if0", Direction::Rx).expect_err("unknown");
        assert!(
            e.to_string()
                .contains("unknown network interface \"no-such-if0\""),
            "{e}"
        );
    }
}
