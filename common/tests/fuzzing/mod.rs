//! A seeded mutation fuzzer that runs on stable Rust, shared by the CI corpus
//! run (`tests/fuzz_corpus.rs`) and the long run (`benches/fuzz.rs`).
//!
//! Each [`Target`] has a seed corpus of *valid* encodings (real messages
//! encoded first), so that mutated inputs get past magic numbers and length
//! checks. The driver runs every seed once, then inputs made by stacking
//! havoc mutations on corpus entries (bit flips, interesting integers,
//! dictionary tokens, inserts, deletes, duplications, truncations, splices
//! and cross-overs of two entries), with a few purely random inputs mixed in.
//! Without coverage instrumentation (which needs nightly), an input whose
//! *outcome* (accepted, or the decoder's error label) was not seen before
//! joins the corpus: a cheap feedback that keeps inputs that got further.
//!
//! A crash is a panic (caught, with its message and location), a broken
//! property asserted by the target (round trips, bookkeeping), or an input
//! whose decoding made the thread's live heap grow past the target's budget
//! ([`CountingAlloc`] measures it per thread). A single allocation request
//! over [`HARD_ALLOC_CAP`] is refused, which aborts the process with the
//! target's name and the input's index on stderr.
//!
//! Everything is deterministic for a given seed: rerunning a target with the
//! same seed and at least `index + 1` inputs reproduces a crash.

#![allow(dead_code)]

pub mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest single allocation a target may request while armed; anything
/// larger means a length taken from the input reached an allocator.
pub const HARD_ALLOC_CAP: usize = 256 << 20;

/// Corpus entries kept per target (seeds plus inputs with new outcomes).
const MAX_CORPUS: usize = 512;

/// Crashes kept (with their input) per target; all are counted.
const MAX_CRASHES_KEPT: usize = 16;

/// Longest purely random input.
const MAX_RANDOM_LEN: usize = 512;

/// A structure-aware mutation: a new input made from a corpus entry, or
/// `None` when the entry does not have the structure.
pub type StructuredMutator = fn(&mut ChaCha8Rng, &[u8]) -> Option<Vec<u8>>;

/// One thing to fuzz: a function over untrusted bytes and its seeds.
pub struct Target {
    /// Short name (table row, JSON key).
    pub name: &'static str,
    /// What it feeds, in a few words.
    pub about: &'static str,
    /// Valid encodings to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens the mutator inserts or writes over (magic numbers, field names).
    pub dictionary: &'static [&'static [u8]],
    /// Longest input tried (mutations are cut to this).
    pub max_len: usize,
    /// Live heap one input may add: a fixed part plus this many bytes per input byte.
    pub alloc_fixed: usize,
    /// See `alloc_fixed`.
    pub alloc_per_byte: usize,
    /// A structure-aware mutation tried for half the inputs (e.g.
    /// [`mutate_json_text`]); `None` for byte mutations only.
    pub structured: Option<StructuredMutator>,
    /// Runs one input; returns an outcome label (`"ok"` or the error's
    /// reason). Panics on a broken property.
    pub run: fn(&[u8]) -> &'static str,
}

/// How long and from where to fuzz.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Inputs per target, seeds included.
    pub inputs: u64,
    /// Seed of the mutation stream.
    pub seed: u64,
    /// Stop a target early after this long (the report says how many ran).
    pub time_limit: Option<Duration>,
}

/// Why an input counts as a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The target panicked (a decoder bug or a broken property).
    Panic,
    /// The input made the heap grow past the target's budget.
    Alloc,
}

/// One crashing input.
#[derive(Clone, Debug)]
pub struct Crash {
    /// Panic or allocation.
    pub kind: CrashKind,
    /// Position in the input stream (reproduces with the same seed).
    pub index: u64,
    /// The panic message, or the allocation figures.
    pub message: String,
    /// `file:line` of the panic; empty for allocation crashes.
    pub location: String,
    /// The input.
    pub input: Vec<u8>,
}

/// What one target's run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The target's name.
    pub name: &'static str,
    /// Inputs run.
    pub inputs: u64,
    /// Wall time.
    pub secs: f64,
    /// Crashing inputs, all counted.
    pub crash_count: u64,
    /// The first crashes of each distinct location, with their inputs.
    pub crashes: Vec<Crash>,
    /// How often each outcome occurred.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Seeds the run started from.
    pub seeds: usize,
    /// Corpus size at the end.
    pub corpus: usize,
    /// Largest live-heap growth of one input, bytes.
    pub peak_alloc: usize,
}

impl Report {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.inputs as f64 / self.secs
        } else {
            0.0
        }
    }

    /// A multi-line description of the kept crashes (input as text when it
    /// is UTF-8, else in hex; long inputs cut).
    pub fn describe_crashes(&self) -> String {
        let mut out = String::new();
        for c in &self.crashes {
            out.push_str(&format!(
                "{} #{} {:?} at {}: {}\n  input ({} bytes): {}\n",
                self.name,
                c.index,
                c.kind,
                c.location,
                c.message,
                c.input.len(),
                show(&c.input, 2048)
            ));
        }
        out
    }
}

/// `bytes` as an escaped string when UTF-8, else as hex; cut to `max` bytes.
pub fn show(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let more = if cut.len() < bytes.len() { " ..." } else { "" };
    match std::str::from_utf8(cut) {
        Ok(text) => format!("{text:?}{more}"),
        Err(_) => format!("{}{more}", hex::encode(cut)),
    }
}

// ---------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------

thread_local! {
    /// Whether this thread is running a fuzz input (allocations are checked).
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Live bytes allocated minus freed on this thread since the last reset.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Highest `LIVE` since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The target and input index running here, for the abort message.
    static CURRENT: Cell<(&'static str, u64)> = const { Cell::new(("", 0)) };
    /// The last panic caught on this thread: message and location.
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The system allocator, counting live bytes per thread (install it with
/// `#[global_allocator]` in the binary that runs the fuzzer).
pub struct CountingAlloc;

fn account(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

/// Whether a request of `size` bytes must be refused; says why on stderr.
fn refuse(size: usize) -> bool {
    if size <= HARD_ALLOC_CAP || !ARMED.try_with(|a| a.get()).unwrap_or(false) {
        return false;
    }
    let (name, index) = CURRENT.try_with(|c| c.get()).unwrap_or(("?", 0));
    // No allocation here: fixed strings and integers only.
    eprintln!(
        "fuzz: target {name} input #{index} requested {size} bytes (cap {HARD_ALLOC_CAP}); aborting"
    );
    true
}

// SAFETY: every call is forwarded to `System` unchanged, except requests
// refused by returning null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout, as the caller promised for us.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            account(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        account(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with this layout.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            account(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Installs (once) a panic hook that records panics of fuzzing threads
/// instead of printing them; other threads keep the default hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if ARMED.try_with(|a| a.get()).unwrap_or(false) {
                let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "(non-string panic payload)".to_string()
                };
                // Panics inside `core` (an overflow in `Iterator::product`,
                // an index out of bounds) are placed at the innermost frame
                // of `common` that led there, when debug info says.
                // Symbolizing allocates a lot once; that is not the input's doing.
                let peak = PEAK.try_with(|p| p.get()).unwrap_or(0);
                let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                let _ = PEAK.try_with(|p| p.set(peak));
                let location = backtrace
                    .lines()
                    .map(str::trim)
                    .filter_map(|l| l.strip_prefix("at "))
                    .find_map(|l| {
                        let (_, path) = l
                            .split_once("common/src/")
                            .or_else(|| l.strip_prefix("./src/").map(|p| ("", p)))?;
                        let file_line = path.rsplit_once(':').map_or(path, |(fl, _col)| fl);
                        Some(format!("common/src/{file_line}"))
                    })
                    .or_else(|| {
                        info.location()
                            .map(|l| format!("{}:{}", l.file(), l.line()))
                    })
                    .unwrap_or_default();
                let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some((message, location)));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs `f` on `input` armed: returns its label (or the panic) and the
/// live-heap growth it caused.
fn run_one(
    f: fn(&[u8]) -> &'static str,
    input: &[u8],
) -> (Result<&'static str, (String, String)>, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ARMED.with(|a| a.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(input)));
    ARMED.with(|a| a.set(false));
    let peak = PEAK.with(|p| p.get()).max(0) as usize;
    let result = result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| ("(panic not recorded)".into(), String::new()))
    });
    (result, peak)
}

/// Runs `input` through `target` once, outside a fuzzing run: `Ok(label)`, or
/// the panic's message and location. For regression tests of saved inputs.
pub fn replay(target: &Target, input: &[u8]) -> Result<&'static str, String> {
    install_panic_hook();
    let (result, _) = run_one(target.run, input);
    result.map_err(|(message, location)| format!("{message} at {location}"))
}

// ---------------------------------------------------------------------------
// Mutation
// ---------------------------------------------------------------------------

/// Integers that often sit on the edge of a check.
const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    u64::MAX,
];

/// FNV-1a, to derive a per-target stream from the run's seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A random range `start..end` inside `0..len` (empty when `len` is 0).
fn range(rng: &mut ChaCha8Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let start = rng.random_range(0..len);
    // Mostly short ranges, sometimes long ones.
    let max = if rng.random_bool(0.8) {
        16.min(len - start)
    } else {
        len - start
    };
    let n = rng.random_range(1..=max.max(1));
    (start, (start + n).min(len))
}

/// Writes `value` as `width` little-endian (or big-endian) bytes at `at`.
fn write_int(buf: &mut [u8], at: usize, width: usize, value: u64, big: bool) {
    let bytes = value.to_le_bytes();
    for i in 0..width {
        if at + i >= buf.len() {
            break;
        }
        buf[at + i] = if big { bytes[width - 1 - i] } else { bytes[i] };
    }
}

/// Applies one random mutation to `buf`; `corpus` supplies splice partners.
fn mutate_once(rng: &mut ChaCha8Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]]) {
    let len = buf.len();
    match rng.random_range(0..16u32) {
        // Flip one bit.
        0 | 1 if len > 0 => {
            let i = rng.random_range(0..len);
            buf[i] ^= 1 << rng.random_range(0..8);
        }
        // Set a byte at random.
        2 if len > 0 => {
            let i = rng.random_range(0..len);
            buf[i] = rng.random();
        }
        // Add or subtract a small number from a byte.
        3 if len > 0 => {
            let i = rng.random_range(0..len);
            let d: u8 = rng.random_range(1..=16);
            buf[i] = if rng.random_bool(0.5) {
                buf[i].wrapping_add(d)
            } else {
                buf[i].wrapping_sub(d)
            };
        }
        // Write an interesting integer (or one derived from the length).
        4..=6 if len > 0 => {
            let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
            let at = rng.random_range(0..len);
            let value = match rng.random_range(0..4u32) {
                0 => (len as u64).wrapping_sub(at as u64 + width as u64),
                1 => (len as u64).wrapping_add(rng.random_range(0..8)),
                _ => INTERESTING[rng.random_range(0..INTERESTING.len())],
            };
            let value = if rng.random_bool(0.2) {
                value.wrapping_add(rng.random_range(0..3)).wrapping_sub(1)
            } else {
                value
            };
            write_int(buf, at, width, value, rng.random_bool(0.1));
        }
        // Insert a dictionary token, or write over bytes with one.
        7 | 8 if !dict.is_empty() => {
            let token = dict[rng.random_range(0..dict.len())];
            let at = rng.random_range(0..=len);
            if rng.random_bool(0.5) {
                buf.splice(at..at, token.iter().copied());
            } else {
                for (i, &b) in token.iter().enumerate() {
                    if at + i < buf.len() {
                        buf[at + i] = b;
                    } else {
                        buf.push(b);
                    }
                }
            }
        }
        // Insert random bytes.
        9 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..=32);
            let fill: Vec<u8> = if rng.random_bool(0.5) {
                (0..n).map(|_| rng.random()).collect()
            } else {
                vec![rng.random(); n]
            };
            buf.splice(at..at, fill);
        }
        // Delete a range.
        10 if len > 0 => {
            let (s, e) = range(rng, len);
            buf.drain(s..e);
        }
        // Duplicate a range in place.
        11 if len > 0 => {
            let (s, e) = range(rng, len);
            let copy = buf[s..e].to_vec();
            let at = rng.random_range(0..=len);
            buf.splice(at..at, copy);
        }
        // Truncate.
        12 if len > 0 => {
            buf.truncate(rng.random_range(0..len));
        }
        // Splice: our prefix, another entry's suffix.
        13 if !corpus.is_empty() => {
            let other = &corpus[rng.random_range(0..corpus.len())];
            let cut = rng.random_range(0..=len);
            let from = rng.random_range(0..=other.len());
            buf.truncate(cut);
            buf.extend_from_slice(&other[from..]);
        }
        // Cross-over: write a range of another entry over ours.
        14 if !corpus.is_empty() && len > 0 => {
            let other = &corpus[rng.random_range(0..corpus.len())];
            let (s, e) = range(rng, other.len());
            let at = rng.random_range(0..len);
            for (i, &b) in other[s..e].iter().enumerate() {
                if at + i < buf.len() {
                    buf[at + i] = b;
                }
            }
        }
        // Swap two bytes.
        _ if len > 1 => {
            let i = rng.random_range(0..len);
            let j = rng.random_range(0..len);
            buf.swap(i, j);
        }
        _ => buf.push(rng.random()),
    }
}

/// The next input: a purely random one now and then, else a corpus entry
/// under a stack of 1 to 16 mutations.
fn next_input(rng: &mut ChaCha8Rng, corpus: &[Vec<u8>], target: &Target) -> Vec<u8> {
    if corpus.is_empty() || rng.random_ratio(1, 32) {
        let n = rng.random_range(0..=MAX_RANDOM_LEN.min(target.max_len));
        let mut v = vec![0u8; n];
        rng.fill_bytes(&mut v);
        return v;
    }
    let base = &corpus[rng.random_range(0..corpus.len())];
    if let Some(structured) = target.structured {
        if rng.random_bool(0.5) {
            if let Some(mut out) = structured(rng, base) {
                // Now and then a byte mutation on top.
                if rng.random_ratio(1, 8) {
                    mutate_once(rng, &mut out, corpus, target.dictionary);
                }
                out.truncate(target.max_len);
                return out;
            }
        }
    }
    let mut buf = base.clone();
    let stack = 1usize << rng.random_range(0..5);
    for _ in 0..stack {
        mutate_once(rng, &mut buf, corpus, target.dictionary);
    }
    buf.truncate(target.max_len);
    buf
}

// ---------------------------------------------------------------------------
// JSON-aware mutation
// ---------------------------------------------------------------------------

/// Values that sit on the edge of a check or of a numeric type.
pub fn interesting_json(rng: &mut ChaCha8Rng, keys: &[&str]) -> serde_json::Value {
    use serde_json::json;
    match rng.random_range(0..24u32) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1),
        3 => json!(2),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(u32::MAX as u64 + 1),
        7 => json!(1u64 << 63),
        8 => json!(9_007_199_254_740_993u64),
        9 => json!(1e308),
        10 => json!(-0.5),
        11 => json!(f64::MIN_POSITIVE),
        12 => json!(null),
        13 => json!(true),
        14 => json!(""),
        15 => json!("\u{0}x\u{7f}é😀"),
        16 => json!("x".repeat(rng.random_range(200..600))),
        17 => json!([]),
        18 => json!({}),
        19 => json!([-1, u32::MAX as u64 + 1, u32::MAX as u64 + 1]),
        20 => {
            let mut v = json!(0);
            for _ in 0..rng.random_range(1..200) {
                v = json!([v]);
            }
            v
        }
        21 if !keys.is_empty() => json!(keys[rng.random_range(0..keys.len())]),
        22 => json!(rng.random::<u64>() >> rng.random_range(0..64)),
        _ => json!(rng.random_range(-1000i64..1000)),
    }
}

/// The path (object keys and array indices, as strings) of every node of `v`.
pub fn json_paths(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                path.push(k.clone());
                json_paths(child, path, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(i.to_string());
                json_paths(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn json_node<'a>(
    v: &'a mut serde_json::Value,
    path: &[String],
) -> Option<&'a mut serde_json::Value> {
    path.iter().try_fold(v, |node, step| match node {
        serde_json::Value::Object(map) => map.get_mut(step),
        serde_json::Value::Array(items) => {
            step.parse::<usize>().ok().and_then(|i| items.get_mut(i))
        }
        _ => None,
    })
}

/// Mutates a JSON document as a tree: replaces a node with an interesting
/// value or a copy of another node, deletes, adds or renames a key,
/// duplicates or drops an array element. `keys` are field names to use.
/// Returns `None` when `text` is not JSON.
pub fn mutate_json_text(rng: &mut ChaCha8Rng, text: &[u8], keys: &[&str]) -> Option<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(text).ok()?;
    for _ in 0..rng.random_range(1..=3) {
        let mut paths = Vec::new();
        json_paths(&doc, &mut Vec::new(), &mut paths);
        let path = paths[rng.random_range(0..paths.len())].clone();
        let donor = {
            let other = &paths[rng.random_range(0..paths.len())];
            json_node(&mut doc, other).map(|n| n.clone())
        };
        let Some(node) = json_node(&mut doc, &path) else {
            continue;
        };
        match rng.random_range(0..8u32) {
            0..=2 => *node = interesting_json(rng, keys),
            3 => {
                if let Some(d) = donor {
                    *node = d;
                }
            }
            4 => match node {
                serde_json::Value::Object(map) if !map.is_empty() => {
                    let k = map.keys().nth(rng.random_range(0..map.len())).cloned();
                    if let Some(k) = k {
                        map.remove(&k);
                    }
                }
                serde_json::Value::Array(items) if !items.is_empty() => {
                    items.remove(rng.random_range(0..items.len()));
                }
                _ => *node = serde_json::Value::Null,
            },
            5 => match node {
                serde_json::Value::Object(map) => {
                    let key = if !keys.is_empty() && rng.random_bool(0.8) {
                        keys[rng.random_range(0..keys.len())].to_string()
                    } else {
                        format!("unknown_{}", rng.random_range(0..4))
                    };
                    map.insert(key, donor.unwrap_or_else(|| interesting_json(rng, keys)));
                }
                serde_json::Value::Array(items) => {
                    let item = if items.is_empty() || rng.random_bool(0.3) {
                        interesting_json(rng, keys)
                    } else {
                        items[rng.random_range(0..items.len())].clone()
                    };
                    items.insert(rng.random_range(0..=items.len()), item);
                }
                _ => *node = interesting_json(rng, keys),
            },
            6 => {
                if let serde_json::Value::Number(n) = node {
                    let delta: i64 = rng.random_range(-2..=2);
                    *node = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                        (Some(u), _, _) => serde_json::json!(u.wrapping_add_signed(delta)),
                        (_, Some(i), _) => serde_json::json!(i.wrapping_add(delta)),
                        (_, _, Some(f)) => serde_json::json!(f * 2.0),
                        _ => serde_json::Value::Null,
                    };
                } else {
                    *node = interesting_json(rng, keys);
                }
            }
            _ => {
                // A value of another type.
                *node = match node {
                    serde_json::Value::String(s) => serde_json::json!([s.clone()]),
                    serde_json::Value::Number(n) => serde_json::json!(n.to_string()),
                    serde_json::Value::Array(a) => serde_json::json!({"0": a.first().cloned()}),
                    serde_json::Value::Object(_) => serde_json::json!(1),
                    serde_json::Value::Bool(b) => serde_json::json!(if *b { 1 } else { 0 }),
                    serde_json::Value::Null => serde_json::json!(false),
                };
            }
        }
    }
    let out = if rng.random_bool(0.5) {
        serde_json::to_vec(&doc)
    } else {
        serde_json::to_vec_pretty(&doc)
    };
    out.ok()
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Fuzzes `target` with `settings`: seeds first, then mutations.
pub fn fuzz(target: &Target, settings: &Settings) -> Report {
    install_panic_hook();
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed ^ fnv(target.name));
    let seeds = (target.seeds)();
    let seed_count = seeds.len();
    let mut corpus = seeds.clone();
    let mut outcomes: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let mut crash_count = 0u64;
    let mut peak_alloc = 0usize;
    let start = Instant::now();
    let mut ran = 0u64;
    for index in 0..settings.inputs {
        if index % 1024 == 0 {
            if let Some(limit) = settings.time_limit {
                if start.elapsed() >= limit {
                    break;
                }
            }
        }
        let input = match seeds.get(index as usize) {
            Some(seed) => seed.clone(),
            None => next_input(&mut rng, &corpus, target),
        };
        CURRENT.with(|c| c.set((target.name, index)));
        let (result, peak) = run_one(target.run, &input);
        ran += 1;
        peak_alloc = peak_alloc.max(peak);
        let budget = target
            .alloc_fixed
            .saturating_add(target.alloc_per_byte.saturating_mul(input.len()));
        let crash = match result {
            Ok(label) => {
                let count = outcomes.entry(label).or_insert(0);
                if *count == 0 && corpus.len() < MAX_CORPUS && index as usize >= seed_count {
                    corpus.push(input.clone());
                }
                *count += 1;
                (peak > budget).then(|| Crash {
                    kind: CrashKind::Alloc,
                    index,
                    message: format!(
                        "live heap grew by {peak} bytes for a {}-byte input (budget {budget}); outcome {label}",
                        input.len()
                    ),
                    location: String::new(),
                    input,
                })
            }
            Err((message, location)) => {
                *outcomes.entry("crash").or_insert(0) += 1;
                Some(Crash {
                    kind: CrashKind::Panic,
                    index,
                    message,
                    location,
                    input,
                })
            }
        };
        if let Some(crash) = crash {
            crash_count += 1;
            let seen = crashes
                .iter()
                .any(|c| c.kind == crash.kind && c.location == crash.location);
            if !seen && crashes.len() < MAX_CRASHES_KEPT {
                crashes.push(crash);
            }
        }
    }
    Report {
        name: target.name,
        inputs: ran,
        secs: start.elapsed().as_secs_f64(),
        crash_count,
        crashes,
        outcomes,
        seeds: seed_count,
        corpus: corpus.len(),
        peak_alloc,
    }
}
