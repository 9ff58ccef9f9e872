//! The label sets and their values: every value is a variant of a small enum, so a label can
//! only take the values listed here (and the README's metrics table names them all).

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// An enum whose variants are label values: `as_str` is what the exposition shows.
macro_rules! label_value {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_value! {
    /// What a request or a fetch was for.
    ObjectKind {
        Narinfo => "narinfo",
        Nar => "nar",
        Listing => "listing",
        Log => "log",
        BuildTrace => "build_trace",
    }
}

label_value! {
    /// How a narinfo or NAR request was answered (`busy`: refused by the fill limits).
    LookupResult { Hit => "hit", Miss => "miss", NotFound => "not_found", Busy => "busy", Error => "error" }
}

label_value! {
    /// What became of a PUT or DELETE.
    UploadResult {
        Stored => "stored",
        Exists => "exists",
        Rejected => "rejected",
        Unauthorized => "unauthorized",
        Busy => "busy",
        Deleted => "deleted",
    }
}

label_value! {
    /// The garbage collections' one kind (the series has always carried `kind="gc"`).
    GcKind { Gc => "gc" }
}

label_value! {
    /// How a garbage collection ended.
    GcResult { Ok => "ok", Busy => "busy", Error => "error" }
}

label_value! {
    /// How an fsck ended: what it found (`clean`, `repaired`, `problems_left`), or that it did
    /// not run (`busy`: another was running; `error`).
    FsckResult {
        Clean => "clean",
        Repaired => "repaired",
        ProblemsLeft => "problems_left",
        Busy => "busy",
        Error => "error",
    }
}

label_value! {
    /// What an fsck found wrong.
    FsckProblem {
        Missing => "missing",
        WrongSize => "wrong_size",
        Damaged => "damaged",
        Orphan => "orphan",
        StaleUpload => "stale_upload",
        NarinfoWithoutNar => "narinfo_without_nar",
    }
}

label_value! {
    /// The limit a refused fill ran into: `--max-fills` or `--max-fill-bytes`.
    FillLimit { Fills => "fills", Bytes => "bytes" }
}

label_value! {
    /// What became of a prefetch.
    PrefetchOutcome { Started => "started", Used => "used", Wasted => "wasted" }
}

label_value! {
    /// Why a prefetch was not started.
    PrefetchSkip { Budget => "budget", Busy => "busy", TooLarge => "too_large" }
}

label_value! {
    /// Why the proxy closed a client connection.
    ConnectionClosed {
        HeaderTimeout => "header_timeout",
        IdleTimeout => "idle_timeout",
        /// Its slot went to a new connection (at --max-connections).
        Evicted => "evicted",
        /// The client took no bytes of a response for --send-timeout.
        SendTimeout => "send_timeout",
    }
}

label_value! {
    /// The `Content-Encoding` an answer went out with.
    Encoding { Zstd => "zstd", Br => "br", Gzip => "gzip" }
}

impl Encoding {
    /// The encoding a token of `Accept-Encoding` or `Content-Encoding` names (`x-gzip` is
    /// gzip), case-insensitively; `None` for any other.
    pub fn from_token(token: &str) -> Option<Encoding> {
        let token = token.trim();
        [
            ("zstd", Encoding::Zstd),
            ("br", Encoding::Br),
            ("gzip", Encoding::Gzip),
            ("x-gzip", Encoding::Gzip),
        ]
        .into_iter()
        .find_map(|(name, e)| token.eq_ignore_ascii_case(name).then_some(e))
    }
}

label_value! {
    /// Why an upstream request failed.
    UpstreamFailure {
        Timeout => "timeout",
        Request => "request",
        Status => "status",
        Invalid => "invalid",
        Redirect => "redirect",
        Down => "down",
    }
}

label_value! {
    /// The route template of a request.
    Route {
        Landing => "/",
        NixCacheInfo => "/nix-cache-info",
        Pubkey => "/pubkey",
        Healthz => "/healthz",
        Readyz => "/readyz",
        Metrics => "/metrics",
        Status => "/status",
        Nar => "/nar/{file}",
        Narinfo => "/{hash}.narinfo",
        Listing => "/{hash}.ls",
        Log => "/log/{drv}",
        Realisation => "/realisations/{id}",
        BuildTraceV2 => "/build-trace-v2/{drv}/{output}",
        Fills => "/_nixcache/fills/{file}",
        Warm => "/_nixcache/warm",
        Pins => "/_nixcache/pins",
        Other => "other",
    }
}

label_value! {
    /// The request's method.
    Method { Get => "GET", Head => "HEAD", Put => "PUT", Delete => "DELETE", Post => "POST", Other => "other" }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: Route,
    pub method: Method,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Route,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EncodingLabels {
    pub encoding: Encoding,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: ObjectKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub kind: ObjectKind,
    pub result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UploadLabels {
    pub kind: ObjectKind,
    pub result: UploadResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FsckResultLabels {
    pub result: FsckResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FsckProblemLabels {
    pub problem: FsckProblem,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeptLabels {
    pub reason: KeptReason,
}

label_value! {
    /// Why GC kept an entry it would have evicted.
    KeptReason { Pinned => "pinned", Upload => "upload" }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcLabels {
    pub kind: GcKind,
    pub result: GcResult,
}

/// `upstream` is a configured upstream's URL: bounded by the configuration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamNameLabels {
    pub upstream: String,
}

/// `upstream` is a configured upstream's URL: bounded by the configuration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
    pub kind: ObjectKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub upstream: String,
    pub kind: ObjectKind,
    pub reason: UpstreamFailure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: FillLimit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: ConnectionClosed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrefetchOutcomeLabels {
    pub kind: ObjectKind,
    pub outcome: PrefetchOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub kind: ObjectKind,
    pub reason: PrefetchSkip,
}

label_value! {
    /// What an upstream answered a narinfo lookup with: the narinfo, or that it has none.
    UpstreamLookupResult { Hit => "hit", Miss => "miss" }
}

/// `upstream` is a configured upstream's URL: bounded by the configuration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLookupLabels {
    pub upstream: String,
    pub result: UpstreamLookupResult,
}

label_value! {
    /// The recorded kinds of upkeep (`crate::db::UpkeepKind`).
    UpkeepKindLabel { Gc => "gc", Fsck => "fsck" }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpkeepLabels {
    pub kind: UpkeepKindLabel,
}

label_value! {
    /// How a recorded GC or fsck run ended (`crate::db::UpkeepRun::result`).
    UpkeepResult {
        Ok => "ok",
        OverLimit => "over_limit",
        Clean => "clean",
        Repaired => "repaired",
        ProblemsLeft => "problems_left",
        Error => "error",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpkeepResultLabels {
    pub kind: UpkeepKindLabel,
    pub result: UpkeepResult,
}
