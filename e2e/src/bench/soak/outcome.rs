//! What each request of the soak ended with, counted by kind of client and outcome: statuses the
//! flaky upstream explains (`502`, `503`, `504`) are counted like any other; a body that is not
//! the object's bytes, a narinfo that says something else, or a status nothing explains is
//! also reported at once on stderr and listed in the report.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The clients of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// narinfo + NAR of paths kept cached.
    Hit,
    /// narinfo + NAR of paths GC keeps evicting.
    Miss,
    /// The big NAR (a miss), hung up on after a few bytes.
    Cancel,
    /// PUT NAR + narinfo of a new path, then GET both back.
    Upload,
    /// PUT of a NAR hung up on halfway through its body.
    UploadCut,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Hit, Kind::Miss, Kind::Cancel, Kind::Upload, Kind::UploadCut];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Hit => "hits",
            Kind::Miss => "misses",
            Kind::Cancel => "cancels",
            Kind::Upload => "uploads",
            Kind::UploadCut => "cut uploads",
        }
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A status, and for a `200` a whole body that checked out.
    Status(u16),
    /// The connection closed before the whole body (the proxy cuts clients of a fill that
    /// failed, e.g. on a truncated upstream body).
    Cut,
    /// Cut, after bytes that were not the object's (a corrupt upstream body, streamed before
    /// verification; the last byte is held back, so such a body never arrives whole).
    CutAfterBadBytes,
    /// The client hung up on purpose.
    HungUp,
    /// No answer, or no whole body, within the client's timeout.
    Timeout,
    /// No answer at all (connection refused or reset).
    Error(String),
    /// A whole `200` body that is not the object's bytes.
    WrongBody(String),
    /// A `200` narinfo that does not say what the object's narinfo says.
    BadNarinfo(String),
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }

    /// The outcome's column in the report.
    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Cut => "cut".into(),
            Outcome::CutAfterBadBytes => "cut after bad bytes".into(),
            Outcome::HungUp => "hung up".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error(_) => "no answer".into(),
            Outcome::WrongBody(_) => "WRONG BODY".into(),
            Outcome::BadNarinfo(_) => "BAD NARINFO".into(),
        }
    }

    /// True when nothing in the mix explains this outcome for `kind`.
    pub fn unexpected(&self, kind: Kind) -> bool {
        match self {
            Outcome::Status(s) => !(200..300).contains(s) && ![502, 503, 504].contains(s),
            Outcome::Cut | Outcome::CutAfterBadBytes => kind == Kind::Hit || kind == Kind::Upload,
            Outcome::HungUp => !matches!(kind, Kind::Cancel | Kind::UploadCut),
            Outcome::Timeout => kind == Kind::Hit,
            Outcome::Error(_) | Outcome::WrongBody(_) | Outcome::BadNarinfo(_) => true,
        }
    }

    /// Counts as an error in the per-interval table (not 2xx, not a deliberate hang-up).
    pub fn failed(label: &str) -> bool {
        !label.starts_with('2') && label != "hung up"
    }
}

/// Most unexpected outcomes kept with their details.
const KEPT: usize = 20;

/// Every outcome so far, shared by the clients.
#[derive(Default)]
pub struct Counters {
    counts: Mutex<BTreeMap<(Kind, String), u64>>,
    unexpected: Mutex<(u64, Vec<String>)>,
}

impl Counters {
    /// Counts `outcome` of a request for `what` (a URL path); an unexpected one is also printed.
    pub fn count(&self, kind: Kind, what: &str, outcome: &Outcome) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((kind, outcome.label())).or_default() += 1;
        drop(counts);
        if outcome.unexpected(kind) {
            let detail = match outcome {
                Outcome::Error(d) | Outcome::WrongBody(d) | Outcome::BadNarinfo(d) => d.clone(),
                _ => String::new(),
            };
            self.unexpected(format!("{}: {what}: {} {detail}", kind.name(), outcome.label()));
        }
    }

    /// Reports something that should never happen, loudly.
    pub fn unexpected(&self, text: String) {
        eprintln!("[bench] soak: UNEXPECTED: {text}");
        let mut kept = self.unexpected.lock().unwrap_or_else(|e| e.into_inner());
        kept.0 += 1;
        if kept.1.len() < KEPT {
            kept.1.push(text);
        }
    }

    /// Counts by (kind, outcome label), as of now.
    pub fn snapshot(&self) -> BTreeMap<(Kind, String), u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many unexpected outcomes there were, and the first of them.
    pub fn unexpected_seen(&self) -> (u64, Vec<String>) {
        self.unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
