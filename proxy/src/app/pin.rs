//! `nixcache pin`, and the declared pins `serve` keeps in line with `--pin`/`--pin-closure`.

use std::fmt::Write as _;

use anyhow::Context;

use crate::{
    cli::{PinAction, ServeGcArgs},
    db::{self, MetadataStore, PinRecord},
    pins::{self, PinError, PinRequest},
    units::format_size,
};

/// Runs `nixcache pin …`: what it prints, and the exit status (1 when a path to unpin was not).
pub async fn pin(action: &PinAction) -> anyhow::Result<(String, u8)> {
    let url = action.database().database_url();
    let db = db::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", crate::redact::url(&url)))?;
    let mut out = String::new();
    let mut status = 0;
    match action {
        PinAction::Add { paths, closure, .. } => {
            for path in paths {
                let request = PinRequest {
                    path: path.clone(),
                    closure: *closure,
                };
                let added = match pins::add(&*db, &request).await {
                    Ok(added) => added,
                    Err(err @ (PinError::Declared { .. } | PinError::TooMany)) => {
                        let _ = writeln!(out, "{err}");
                        status = 1;
                        continue;
                    }
                    Err(err) => return Err(err.into()),
                };
                let verb = if added.existed { "already pinned" } else { "pinned" };
                let _ = writeln!(out, "{verb} {}", describe(&*db, &added.pin).await?);
            }
        }
        PinAction::Rm { paths, .. } => {
            for hash in paths {
                match pins::remove(&*db, hash).await {
                    Ok(pin) => {
                        let _ = writeln!(out, "unpinned {}", pin.path.to_absolute());
                    }
                    Err(err @ (PinError::NotPinned(_) | PinError::Declared { .. })) => {
                        let _ = writeln!(out, "{err}");
                        status = 1;
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        PinAction::Ls { .. } => list(&*db, &mut out).await?,
    }
    Ok((out.trim_end().to_owned(), status))
}

async fn list(db: &dyn MetadataStore, out: &mut String) -> anyhow::Result<()> {
    let all = db.pins().await?;
    if all.is_empty() {
        out.push_str("no pins");
        return Ok(());
    }
    // Each closure is walked on its own for its line: only for a list one reads.
    let each = all.len() <= DESCRIBED;
    for pin in &all {
        let line = if each {
            describe(db, pin).await?
        } else {
            format!("{}  {}", pin.path.to_absolute(), kind(pin))
        };
        let _ = writeln!(out, "{line}");
    }
    let held = pins::closure_of(db, &all).await?;
    let _ = write!(
        out,
        "{} pins hold {} cached paths ({})",
        all.len(),
        held.cached,
        format_size(held.bytes)
    );
    Ok(())
}

/// Pins `ls` describes one by one (walking each closure); beyond, only the total is walked.
const DESCRIBED: usize = 100;

/// `closure|path  declared|by hand`.
fn kind(pin: &PinRecord) -> String {
    format!(
        "{}  {}",
        if pin.closure { "closure" } else { "path" },
        if pin.declared { "declared" } else { "by hand" },
    )
}

/// `/nix/store/…  closure|path  declared|by hand  N cached paths (size)`.
async fn describe(db: &dyn MetadataStore, pin: &PinRecord) -> anyhow::Result<String> {
    let held = pins::closure_of(db, std::slice::from_ref(pin)).await?;
    Ok(format!(
        "{}  {}  {} cached paths ({})",
        pin.path.to_absolute(),
        kind(pin),
        held.cached,
        format_size(held.bytes),
    ))
}

/// Makes the declared pins exactly `--pin`'s and `--pin-closure`'s, when either is given or
/// `--sync-pins` asks to (an empty list then removes every declared pin).
pub(super) async fn sync_declared_pins(db: &dyn MetadataStore, gc: &ServeGcArgs) -> anyhow::Result<()> {
    let declared = gc.declared_pins();
    if declared.is_empty() && !gc.sync_pins {
        return Ok(());
    }
    let synced = pins::sync_declared(db, &declared)
        .await
        .context("keeping the declared pins (--pin, --pin-closure)")?;
    if synced != pins::Synced::default() {
        tracing::info!(
            added = synced.added,
            removed = synced.removed,
            declared = declared.len(),
            "declared pins updated"
        );
    }
    Ok(())
}
