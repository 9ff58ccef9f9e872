//! The comparison table: one row per metric, nginx and nixcache (and, when
//! measured, nixcache's replicas) as median (min–max) over the runs, their
//! ratios to nginx and the goals.

use std::fmt::Write as _;

use super::procfs::{CpuUse, IDLE_BELOW_PCT};
use super::{summary, Server};

/// Which direction is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A goal for nixcache's figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    None,
    /// median(nixcache) / median(nginx) at least this.
    RatioAtLeast(f64),
    /// Every nixcache run below this.
    Below(f64),
    /// Every nixcache run exactly this.
    Exactly(f64),
}

struct Row {
    label: String,
    better: Better,
    goal: Goal,
    /// nginx, nixcache, nixcache's replicas ([`SERVERS`] order).
    values: [Vec<f64>; 3],
}

/// The report's columns, in order.
const SERVERS: [Server; 3] = [Server::Nginx, Server::Nixcache, Server::Replicas];
/// The servers a goal is for.
const JUDGED: [Server; 2] = [Server::Nixcache, Server::Replicas];

struct Condition {
    label: String,
    server: Server,
    busy: Vec<f64>,
    /// Server, client and other CPU, % of one core.
    cpu: [Vec<f64>; 3],
}

/// Everything measured, in the order it was first added.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    conditions: Vec<Condition>,
    notes: Vec<String>,
    /// Tables of their own (title, markdown), after the comparison.
    sections: Vec<(String, String)>,
}

fn slot(server: Server) -> usize {
    match server {
        Server::Nginx => 0,
        Server::Nixcache => 1,
        Server::Replicas => 2,
    }
}

impl Report {
    pub fn add(&mut self, label: &str, better: Better, goal: Goal, server: Server, value: f64) {
        let at = match self.rows.iter().position(|r| r.label == label) {
            Some(at) => at,
            None => {
                let values = [Vec::new(), Vec::new(), Vec::new()];
                self.rows.push(Row {
                    label: label.to_string(),
                    better,
                    goal,
                    values,
                });
                self.rows.len() - 1
            }
        };
        self.rows[at].values[slot(server)].push(value);
    }

    /// Rows of one scenario for one server, labelled `<scenario>: <what>`.
    pub fn scoped<'a>(&'a mut self, scenario: &'a str, server: Server) -> Scoped<'a> {
        Scoped {
            report: self,
            scenario,
            server,
        }
    }

    /// How busy the box was before a run, and who used the CPU during it.
    pub fn condition(&mut self, label: &str, server: Server, busy: f64, cpu: Option<&CpuUse>) {
        let at = match self
            .conditions
            .iter()
            .position(|c| c.label == label && c.server == server)
        {
            Some(at) => at,
            None => {
                let cpu = [Vec::new(), Vec::new(), Vec::new()];
                self.conditions.push(Condition {
                    label: label.to_string(),
                    server,
                    busy: vec![],
                    cpu,
                });
                self.conditions.len() - 1
            }
        };
        let c = &mut self.conditions[at];
        c.busy.push(busy.round());
        if let Some(u) = cpu {
            for (slot, s) in c.cpu.iter_mut().zip([u.server_s, u.client_s, u.other_s]) {
                slot.push(u.pct(s).round());
            }
        }
    }

    /// A table of its own, shown after the nginx comparison.
    pub fn section(&mut self, title: &str, markdown: String) {
        self.sections.push((title.to_string(), markdown));
    }

    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Goal lines: (met, text), one per judged server with figures.
    pub fn goals(&self) -> Vec<(bool, String)> {
        let mut lines = Vec::new();
        for r in &self.rows {
            for server in JUDGED {
                let Some((met, goal)) = judge(r, server) else {
                    continue;
                };
                let ratio = ratio(r, server).map_or(String::new(), |x| format!(", ratio {}×", ratio_num(x)));
                let value = cell(&r.values[slot(server)]);
                let name = server.name();
                lines.push((met, format!("{}: {goal}: {name} {value}{ratio}", r.label)));
            }
        }
        lines
    }

    /// True when some row has figures of the replicas (their columns are shown).
    fn has_replicas(&self) -> bool {
        self.rows
            .iter()
            .any(|r| !r.values[slot(Server::Replicas)].is_empty())
    }

    /// The result table, goals, conditions and notes, as markdown.
    pub fn tables(&self) -> String {
        let replicas = self.has_replicas();
        let mut out = if replicas {
            let name = Server::Replicas.name();
            format!(
                "| metric | nginx | nixcache | {name} | nixcache/nginx | {name}/nginx | goal | met |\n\
                 |---|---|---|---|---|---|---|---|\n"
            )
        } else {
            "| metric | nginx | nixcache | nixcache/nginx | goal | met |\n|---|---|---|---|---|---|\n"
                .to_string()
        };
        if self.rows.is_empty() {
            // Only parts with tables of their own ran (gc, soak).
            out.clear();
        }
        let shown: &[Server] = if replicas { &SERVERS } else { &SERVERS[..2] };
        for r in &self.rows {
            let arrow = if r.better == Better::Higher { "↑" } else { "↓" };
            let mut cells: Vec<String> = shown.iter().map(|&s| cell(&r.values[slot(s)])).collect();
            for &server in &shown[1..] {
                cells.push(ratio(r, server).map_or("–".to_string(), |x| format!("{}×", ratio_num(x))));
            }
            let (met, goal) = verdict(r);
            let _ = writeln!(
                out,
                "| {} {arrow} | {} | {goal} | {met} |",
                r.label,
                cells.join(" | ")
            );
        }
        for (title, markdown) in &self.sections {
            let _ = write!(out, "\n### {title}\n\n{markdown}");
        }
        let goals = self.goals();
        if !goals.is_empty() {
            out.push_str("\n### Goals\n\n");
        }
        for (met, line) in goals {
            let _ = writeln!(out, "- {} {line}", if met { "MET" } else { "**NOT MET**" });
        }
        out.push_str(&self.condition_table());
        out.push_str(&self.notes_section());
        out
    }

    fn condition_table(&self) -> String {
        if self.conditions.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\n### Conditions\n\nbusy before: % of the whole box over 2 s before each run (waited ≤ 60 s for < {IDLE_BELOW_PCT:.0} %); \
             CPU columns: % of one core during the run (server = its processes, client = the bench process and wrk, \
             other = the rest of the box).\n\n| measurement | server | busy before % | server CPU % | client CPU % | other CPU % |\n|---|---|---|---|---|---|\n"
        );
        for c in &self.conditions {
            let [server, client, other] = c.cpu.each_ref().map(|v| cell(v));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {server} | {client} | {other} |",
                c.label,
                c.server.name(),
                cell(&c.busy)
            );
        }
        out
    }

    fn notes_section(&self) -> String {
        let mut notes = self.notes.clone();
        for r in &self.rows {
            for server in SERVERS {
                let values = &r.values[slot(server)];
                if let Some((med, min, max)) = summary(values).filter(|_| values.len() > 1) {
                    // Spreads of near-zero counts (page faults of nginx) mean nothing.
                    if med >= 1.0 && (max - min) / med > 0.25 && !matches!(r.goal, Goal::Exactly(_)) {
                        let name = server.name();
                        notes.push(format!(
                            "{}, {name}: runs spread by {:.0} % of the median (noisy or bimodal): {}",
                            r.label,
                            100.0 * (max - min) / med,
                            values.iter().map(|v| num(*v)).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
        for c in &self.conditions {
            if c.busy.iter().any(|&b| b >= IDLE_BELOW_PCT) {
                notes.push(format!(
                    "{}, {}: a run started on a busy box ({})",
                    c.label,
                    c.server.name(),
                    cell(&c.busy)
                ));
            }
        }
        if notes.is_empty() {
            return String::new();
        }
        let mut out = String::from("\n### Anomalies and notes\n\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }
}

/// See [`Report::scoped`].
pub struct Scoped<'a> {
    report: &'a mut Report,
    scenario: &'a str,
    server: Server,
}

impl Scoped<'_> {
    pub fn add(&mut self, what: &str, better: Better, goal: Goal, value: f64) {
        let label = format!("{}: {what}", self.scenario);
        self.report.add(&label, better, goal, self.server, value);
    }
}

/// median(`server`) / median(nginx).
fn ratio(r: &Row, server: Server) -> Option<f64> {
    let (nginx, _, _) = summary(&r.values[slot(Server::Nginx)])?;
    let (nix, _, _) = summary(&r.values[slot(server)])?;
    (nginx != 0.0).then(|| nix / nginx)
}

/// The goal and met cells of a row: "yes" when every judged server with
/// figures met it, else which did not.
fn verdict(r: &Row) -> (String, String) {
    let judged: Vec<(Server, bool, String)> = JUDGED
        .iter()
        .filter_map(|&s| judge(r, s).map(|(met, goal)| (s, met, goal)))
        .collect();
    let Some((_, _, goal)) = judged.first() else {
        return (String::new(), String::new());
    };
    let missed: Vec<&str> = judged.iter().filter(|j| !j.1).map(|j| j.0.name()).collect();
    let met = match (missed.is_empty(), judged.len()) {
        (true, _) => "yes".to_string(),
        (false, 1) => "**NO**".to_string(),
        (false, _) => format!("**NO** ({})", missed.join(", ")),
    };
    (met, goal.clone())
}

/// (met, description) for a row with a goal, for `server`'s figures (None
/// without a goal or without figures).
fn judge(r: &Row, server: Server) -> Option<(bool, String)> {
    let nix = &r.values[slot(server)];
    if nix.is_empty() && server != Server::Nixcache {
        return None;
    }
    match r.goal {
        Goal::None => None,
        Goal::RatioAtLeast(x) => Some((
            ratio(r, server).is_some_and(|v| v >= x),
            format!("≥ {x:.1}× nginx"),
        )),
        Goal::Below(x) => Some((
            !nix.is_empty() && nix.iter().all(|&v| v < x),
            format!("< {} (every run)", num(x)),
        )),
        Goal::Exactly(x) => Some((
            !nix.is_empty() && nix.iter().all(|&v| v == x),
            format!("= {} (every run)", num(x)),
        )),
    }
}

/// `median (min–max)`.
fn cell(values: &[f64]) -> String {
    match summary(values) {
        None => "–".to_string(),
        Some((m, lo, hi)) if lo == hi => num(m),
        Some((m, lo, hi)) => format!("{} ({}–{})", num(m), num(lo), num(hi)),
    }
}

/// A ratio: two decimals up to 100, then a whole number.
fn ratio_num(x: f64) -> String {
    if x.abs() < 100.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

/// Median (min–max) of `values`, each as [`num`] writes it; "—" when there are none.
pub fn spread(values: &[f64]) -> String {
    match super::summary(values) {
        Some((m, lo, hi)) => format!("{} ({}–{})", num(m), num(lo), num(hi)),
        None => "—".into(),
    }
}

/// A number with a precision that suits its size.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if v.fract() == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests;
