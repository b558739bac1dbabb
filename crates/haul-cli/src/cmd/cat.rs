//! `haul cat`: an object to stdout, checked against its MD5 ETag.

use anyhow::{bail, Result};
use haul_engine::report::NoObserver;
use haul_engine::{Transfer, TransferOptions};
use haul_store::location::Location;

use crate::args::{CatArgs, Global};
use haul_jobs::Connector;

use crate::to_spec::Side;

pub async fn run(_g: &Global, a: CatArgs) -> Result<u8> {
    let loc = Location::parse(&a.location)?;
    let opened = Connector::default()
        .open_existing(&loc, &a.conn.side(Side::Only))
        .await?;
    if opened.key.is_empty() || opened.key.is_dir_marker() {
        bail!(
            "{}: not an object (give a key, not a prefix or directory)",
            opened.shown
        );
    }
    let t = Transfer::new(TransferOptions::default(), super::ctrl_c());
    match t
        .download_to(&opened.store, &opened.key, tokio::io::stdout(), &NoObserver)
        .await
    {
        Ok(_) => Ok(0),
        Err(e) if e.is_not_found() => bail!("{}: no such object", opened.shown),
        Err(e) => {
            eprintln!("haul: error: {e}");
            Ok(1)
        }
    }
}
